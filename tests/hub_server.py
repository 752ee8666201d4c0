"""A loopback stand-in for the Hugging Face Hub, good enough for the real ``huggingface_hub`` client.

It listens on ``127.0.0.1`` (a free port), keeps every repo in memory (commits with full file contents, branches,
``refs/pr/N``), and answers the endpoints the client uses for ``snapshot_download``, ``hf_hub_download``,
``model_info``/``repo_info``, ``list_repo_tree``/``list_repo_files``, ``file_exists``, ``create_repo``,
``create_branch``, ``upload_folder``/``create_commit`` (regular uploads only: preupload always answers
``"regular"``, so no LFS/Xet), ``whoami`` and Collections. Tests can inject failures
(:meth:`HubServer.fail_next`: any status, e.g. 500 or 429, for any method and path), make the server accept
connections and never answer (:attr:`HubServer.hang`, a stuck proxy), and read the request log
(:attr:`HubServer.requests`). :func:`closed_port_endpoint` gives an endpoint where connections are refused.

Auth: reads of public repos need no token; writes and private repos need ``Authorization: Bearer <token>`` with
the server's token (:attr:`HubServer.token`). Unknown repos answer like the Hub: 401 without a token, 404 with one,
both with ``X-Error-Code: RepoNotFound``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

MAX_BODY = 256 * 1024 * 1024  # bounded: tests push tiny models
DEFAULT_TOKEN = "hf_loopbackTESTtoken0123456789abcdef"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as ``oid`` of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Commit:
    sha: str
    parents: list[str]
    files: dict[str, bytes]
    message: str
    date: str


@dataclass
class Repo:
    repo_id: str
    repo_type: str = "model"
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # "main", "refs/pr/1", tags... -> commit sha
    prs: int = 0
    created: str = field(default_factory=_now)

    def resolve(self, rev: str) -> Commit | None:
        if rev in self.refs:
            return self.commits[self.refs[rev]]
        if rev in self.commits:
            return self.commits[rev]
        return None


@dataclass
class Failure:
    status: int
    method: str | None
    path_contains: str | None
    remaining: int


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubServer:
    """In-memory Hub. Use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, token: str = DEFAULT_TOKEN, user: str = "test-user", orgs: tuple[str, ...] = ()):
        self.token = token
        self.user = user
        self.orgs = set(orgs)  # informational (whoami); any namespace is writable with the token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.collections: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path?query)
        self.failures: list[Failure] = []
        self.lock = threading.RLock()
        #: While True, every request is accepted, logged and never answered (until stop()).
        self.hang = False
        self._release = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "HubServer":
        handler = type("BoundHandler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hub-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # unblock the requests left hanging
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- test helpers ----------------------------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 429, *, method: str | None = "POST",
                  path_contains: str | None = "/commit/") -> None:
        """Answer the next ``n`` matching requests with ``status`` (default: commits get 429 Too Many Requests)."""
        with self.lock:
            self.failures.append(Failure(status, method, path_contains, n))

    def clear_failures(self) -> None:
        with self.lock:
            self.failures.clear()

    def count(self, method: str | None = None, contains: str = "") -> int:
        """How many logged requests match ``method`` and contain ``contains`` in their path."""
        with self.lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and contains in p)

    def commits(self, repo_id: str, repo_type: str = "model") -> list[Commit]:
        """Commits of a repo, oldest first (all refs)."""
        repo = self.repos[(repo_type, repo_id)]
        return list(repo.commits.values())

    def head(self, repo_id: str, rev: str = "main", repo_type: str = "model") -> Commit:
        return self.repos[(repo_type, repo_id)].resolve(rev)

    def create_repo(self, repo_id: str, *, private: bool = False, repo_type: str = "model") -> Repo:
        with self.lock:
            key = (repo_type, repo_id)
            if key not in self.repos:
                repo = Repo(repo_id, repo_type, private)
                self._add_commit(repo, "main", {".gitattributes": GITATTRIBUTES}, "initial commit", parent=None)
                self.repos[key] = repo
            return self.repos[key]

    def _add_commit(self, repo: Repo, ref: str, files: dict[str, bytes], message: str, parent: str | None) -> Commit:
        sha = hashlib.sha1(f"{repo.repo_id}\0{ref}\0{parent}\0{message}\0{uuid.uuid4()}".encode()).hexdigest()
        commit = Commit(sha, [parent] if parent else [], dict(files), message, _now())
        repo.commits[sha] = commit
        repo.refs[ref] = sha
        return commit

    def _check_failure(self, method: str, path: str) -> int | None:
        with self.lock:
            for f in self.failures:
                if f.remaining > 0 and (f.method is None or f.method == method) and \
                        (f.path_contains is None or f.path_contains in path):
                    f.remaining -= 1
                    return f.status
            self.failures = [f for f in self.failures if f.remaining > 0]
        return None


# -- request handling ----------------------------------------------------------------------------------------
_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"
    server_version = "HubStandIn/1.0"

    def log_message(self, *args) -> None:  # quiet
        pass

    # dispatch
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        hub = self.hub
        with hub.lock:
            hub.requests.append((method, self.path))
        if hub.hang:  # a stuck proxy: the connection is open, no answer ever comes
            hub._release.wait(timeout=120)
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json({"error": "body too large"}, 413)
            return
        self.body = self.rfile.read(length) if length else b""
        status = hub._check_failure(method, self.path)
        if status is not None:
            self._json({"error": f"injected failure {status}"}, status,
                       headers={"Retry-After": "0"} if status == 429 else None)
            return
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.segments = [unquote(s) for s in split.path.split("/")[1:]]
        try:
            self._route(method)
        except HubError as e:
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._json({"error": e.message}, e.status, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # auth
    def _authenticated(self) -> bool:
        auth = self.headers.get("Authorization", "")
        return auth == f"Bearer {self.hub.token}"

    def _require_auth(self) -> None:
        auth = self.headers.get("Authorization")
        if not auth:
            raise HubError(401, "Invalid username or password.")
        if auth != f"Bearer {self.hub.token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo_type: str, repo_id: str, *, write: bool = False) -> Repo:
        if write:
            self._require_auth()
        with self.hub.lock:
            repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._authenticated()):
            raise HubError(404 if self._authenticated() else 401, "Repository not found", "RepoNotFound")
        return repo

    @staticmethod
    def _commit_at(repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    # responses
    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    # routes
    def _route(self, method: str) -> None:
        s = self.segments
        if s[:1] == ["api"]:
            rest = s[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if rest == ["repos", "create"] and method == "POST":
                return self._create_repo()
            if rest == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo()
            if rest == ["validate-yaml"] and method == "POST":
                return self._json({"errors": [], "warnings": []})
            if rest[:1] == ["collections"]:
                return self._collections(method, rest[1:])
            if rest[:1] and rest[0] in _REPO_TYPES:
                return self._repo_api(method, _REPO_TYPES[rest[0]], rest[1:])
            raise HubError(404, f"no route for {self.path}")
        # file downloads: /{repo_id}/resolve/{rev}/{path}  (datasets/ and spaces/ prefixes too)
        repo_type = "model"
        if s and s[0] in _REPO_TYPES and s[0] != "models":
            repo_type, s = _REPO_TYPES[s[0]], s[1:]
        if "resolve" in s and method in ("GET", "HEAD"):
            i = s.index("resolve")
            if i in (1, 2) and len(s) > i + 2:
                return self._resolve(repo_type, "/".join(s[:i]), s[i + 1], "/".join(s[i + 2:]))
        raise HubError(404, f"no route for {self.path}")

    def _whoami(self) -> None:
        self._require_auth()
        self._json({"type": "user", "name": self.hub.user, "fullname": self.hub.user,
                    "orgs": [{"name": o, "type": "org"} for o in sorted(self.hub.orgs)],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}}})

    def _create_repo(self) -> None:
        self._require_auth()
        payload = json.loads(self.body or b"{}")
        name, org = payload.get("name"), payload.get("organization")
        repo_type = payload.get("type") or "model"
        repo_id = f"{org}/{name}" if org else f"{self.hub.user}/{name}"
        if not name or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", repo_id):
            raise HubError(400, "invalid repo name")
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.endpoint}/{prefix}{repo_id}"
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:
                self._json({"error": "You already created this model repo", "url": url}, 409)
                return
            self.hub.create_repo(repo_id, private=private, repo_type=repo_type)
        self._json({"url": url, "name": repo_id, "id": uuid.uuid4().hex[:24]})

    def _delete_repo(self) -> None:
        self._require_auth()
        payload = json.loads(self.body or b"{}")
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        with self.hub.lock:
            if self.hub.repos.pop((payload.get("type") or "model", repo_id), None) is None:
                raise HubError(404, "Repository not found", "RepoNotFound")
        self._json({})

    def _split_repo(self, rest: list[str], repo_type: str) -> tuple[str, list[str]]:
        """``rest`` is ``[ns, name, ...]`` or ``[name, ...]``: pick the form that names an existing repo."""
        if len(rest) >= 2 and (repo_type, f"{rest[0]}/{rest[1]}") in self.hub.repos:
            return f"{rest[0]}/{rest[1]}", rest[2:]
        if rest and (repo_type, rest[0]) in self.hub.repos:
            return rest[0], rest[1:]
        if len(rest) >= 2:
            return f"{rest[0]}/{rest[1]}", rest[2:]
        return rest[0] if rest else "", []

    def _repo_api(self, method: str, repo_type: str, rest: list[str]) -> None:
        repo_id, tail = self._split_repo(rest, repo_type)
        if not tail and method == "GET":
            repo = self._repo(repo_type, repo_id)
            return self._info(repo, self._commit_at(repo, "main"))
        action, args = (tail[0], tail[1:]) if tail else ("", [])
        if action == "revision" and method == "GET" and args:
            repo = self._repo(repo_type, repo_id)
            return self._info(repo, self._commit_at(repo, "/".join(args)))
        if action == "tree" and method == "GET" and args:
            repo = self._repo(repo_type, repo_id)
            return self._tree(self._commit_at(repo, args[0]), "/".join(args[1:]))
        if action == "refs" and method == "GET":
            repo = self._repo(repo_type, repo_id)
            branches = [{"name": r, "ref": f"refs/heads/{r}", "targetCommit": c}
                        for r, c in repo.refs.items() if not r.startswith("refs/")]
            prs = [{"name": r, "ref": r, "targetCommit": c} for r, c in repo.refs.items() if r.startswith("refs/pr/")]
            return self._json({"branches": branches, "tags": [], "converts": [], "pullRequests": prs})
        if action == "commits" and method == "GET" and args:
            repo = self._repo(repo_type, repo_id)
            return self._json(self._history(repo, self._commit_at(repo, args[0])))
        if action == "preupload" and method == "POST" and args:
            repo = self._repo(repo_type, repo_id, write=True)
            return self._preupload(repo, "/".join(args))
        if action == "commit" and method == "POST" and args:
            repo = self._repo(repo_type, repo_id, write=True)
            return self._commit(repo, "/".join(args))
        if action == "branch" and args and method in ("POST", "DELETE"):
            repo = self._repo(repo_type, repo_id, write=True)
            return self._branch(repo, "/".join(args), method)
        if action == "settings" and method == "PUT":
            repo = self._repo(repo_type, repo_id, write=True)
            payload = json.loads(self.body or b"{}")
            if "private" in payload:
                repo.private = bool(payload["private"])
            return self._json({})
        raise HubError(404, f"no route for {self.path}")

    def _info(self, repo: Repo, commit: Commit) -> None:
        files = sorted(commit.files)
        info = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id, "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0], "sha": commit.sha, "lastModified": commit.date,
            "createdAt": repo.created, "private": repo.private, "disabled": False, "gated": False,
            "downloads": 0, "likes": 0, "tags": [], "library_name": "timm" if "config.json" in files else None,
            "siblings": [{"rfilename": f, "size": len(commit.files[f]), "blobId": git_blob_sha1(commit.files[f])}
                         for f in files],
            "usedStorage": sum(len(v) for v in commit.files.values()),
        }
        self._json(info)

    def _tree(self, commit: Commit, path: str) -> None:
        recursive = self.query.get("recursive", "false").lower() in ("1", "true")
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if prefix and not any(f.startswith(prefix) for f in commit.files):
            raise HubError(404, f"{path} does not exist", "EntryNotFound")
        entries, dirs = [], set()
        for f in sorted(commit.files):
            if not f.startswith(prefix):
                continue
            rel = f[len(prefix):]
            parts = rel.split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    entries.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0,
                                    "path": d})
            if recursive or len(parts) == 1:
                data = commit.files[f]
                entries.append({"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": f})
        self._json(entries)

    def _history(self, repo: Repo, commit: Commit) -> list[dict]:
        out = []
        while commit is not None:
            out.append({"id": commit.sha, "title": commit.message, "message": commit.message, "date": commit.date,
                        "authors": [{"user": self.hub.user}]})
            commit = repo.commits.get(commit.parents[0]) if commit.parents else None
        return out

    def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo(repo_type, repo_id)
        commit = self._commit_at(repo, rev)
        data = commit.files.get(path)
        if data is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_sha1(data)}"', "Accept-Ranges": "bytes"}
        status, body = 200, data
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m:
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            body = data[start:end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
        self._send(status, body, "application/octet-stream", headers)

    def _preupload(self, repo: Repo, rev: str) -> None:
        payload = json.loads(self.body or b"{}")
        commit = repo.resolve(rev) if not self.query.get("create_pr") else repo.resolve(rev) or repo.resolve("main")
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        files = []
        for f in payload.get("files", []):
            existing = commit.files.get(f["path"])
            files.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": git_blob_sha1(existing) if existing is not None else None})
        self._json({"files": files, "commitOid": commit.sha})

    def _commit(self, repo: Repo, rev: str) -> None:
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next((x["value"] for x in lines if x.get("key") == "header"), {})
        with self.hub.lock:
            base = self._commit_at(repo, rev)
            if header.get("parentCommit") and header["parentCommit"] != base.sha:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(base.files)
            for item in lines:
                key, value = item.get("key"), item.get("value", {})
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, "unsupported encoding")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "lfsFile":
                    raise HubError(400, "LFS uploads are not supported by the stand-in (preupload says regular)")
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HubError(404, f"file {value['path']} does not exist", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for f in [f for f in files if f.startswith(prefix)]:
                        del files[f]
            message = header.get("summary") or "update"
            pr_url = None
            if self.query.get("create_pr") in ("1", "true"):
                repo.prs += 1
                ref = f"refs/pr/{repo.prs}"
                pr_url = f"{self.hub.endpoint}/{repo.repo_id}/discussions/{repo.prs}"
            else:
                ref = rev if rev in repo.refs else next((r for r, c in repo.refs.items() if c == base.sha), rev)
                if rev not in repo.refs:  # committing on a sha: not allowed on the Hub either
                    raise HubError(400, "commits must target a branch")
            commit = self.hub._add_commit(repo, ref, files, message, parent=base.sha)
        self._json({"success": True, "commitOid": commit.sha, "pullRequestUrl": pr_url,
                    "commitUrl": f"{self.hub.endpoint}/{repo.repo_id}/commit/{commit.sha}"})

    def _branch(self, repo: Repo, branch: str, method: str) -> None:
        with self.hub.lock:
            if method == "DELETE":
                if repo.refs.pop(branch, None) is None:
                    raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                return self._json({})
            if branch in repo.refs:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            start = json.loads(self.body or b"{}").get("startingPoint") or "main"
            repo.refs[branch] = self._commit_at(repo, start).sha
        self._json({})

    # collections
    def _collections(self, method: str, rest: list[str]) -> None:
        hub = self.hub
        if not rest and method == "POST":
            self._require_auth()
            p = json.loads(self.body or b"{}")
            ns, title = p.get("namespace") or hub.user, p["title"]
            base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "collection"
            with hub.lock:
                for slug, c in hub.collections.items():
                    if c["owner"]["name"] == ns and c["title"] == title:
                        self._json({"error": "Collection already exists", "slug": slug}, 409)
                        return
                slug = f"{ns}/{base}-{uuid.uuid4().hex[:24]}"
                hub.collections[slug] = {
                    "slug": slug, "title": title, "description": p.get("description"),
                    "owner": {"name": ns, "type": "org" if ns != hub.user else "user"}, "items": [],
                    "lastUpdated": _now(), "position": len(hub.collections), "private": bool(p.get("private")),
                    "theme": "default", "upvotes": 0, "shareUrl": f"{hub.endpoint}/collections/{slug}"}
                return self._json(hub.collections[slug])
        if not rest and method == "GET":
            owner = self.query.get("owner")
            return self._json([c for c in hub.collections.values() if owner is None or c["owner"]["name"] == owner])
        slug = "/".join(rest[:2])
        c = hub.collections.get(slug)
        if c is None or (c["private"] and not self._authenticated()):
            raise HubError(404, "Collection not found")
        tail = rest[2:]
        if not tail and method == "GET":
            return self._json(c)
        if tail == ["items"] and method == "POST":
            self._require_auth()
            p = json.loads(self.body or b"{}")
            item = p["item"]
            with hub.lock:
                if any(i["id"] == item["id"] and i["type"] == item["type"] for i in c["items"]):
                    self._json({"error": "Item already in collection"}, 409)
                    return
                entry = {"_id": uuid.uuid4().hex[:24], "id": item["id"], "type": item["type"],
                         "position": len(c["items"])}
                if p.get("note"):
                    entry["note"] = {"text": p["note"], "html": p["note"]}
                c["items"].append(entry)
                c["lastUpdated"] = _now()
            return self._json(c)
        if not tail and method == "DELETE":
            self._require_auth()
            hub.collections.pop(slug, None)
            return self._json({})
        raise HubError(404, f"no route for {self.path}")


def closed_port_endpoint() -> str:
    """An endpoint on 127.0.0.1 where nothing listens (connections are refused at once)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def wait_until(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


__all__ = ["HubServer", "DEFAULT_TOKEN", "git_blob_sha1", "quote", "closed_port_endpoint"]
