"""Publishing a built zoo to the Hub and consuming a published one.

A built zoo folder (written by training) holds ``trunk/<name>/`` and ``branches/<name>/`` model folders in hfsoup's
Hub format. :func:`push_zoo` publishes one repo per model (one commit each), a Hub Collection and a manifest
``zoo.json`` in the repo ``{org}/hfsoup-zoo``; it is resumable (state in ``<zoo>/.push-state.json``) and backs off on
rate limits and server errors. :func:`load_zoo_manifest` / :func:`list_zoo` read a manifest (Hub repo, ``zoo.json``
file or zoo folder); :func:`pull_zoo` downloads a selection pinned to the manifest's commit shas, in parallel,
verifying every file's SHA-256.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from hfsoup.errors import HfSoupError, PushError
from hfsoup.hub.format import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, decode_metadata, write_json_atomic
from hfsoup.core.ingredients import sha256_file

DEFAULT_PREFIX = "resnet50-cifar100"
MANIFEST_REPO_NAME = "hfsoup-zoo"
MANIFEST_NAME = "zoo.json"
STATE_NAME = ".push-state.json"
MANIFEST_FORMAT = "hfsoup-zoo/1"
MODEL_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)
SCORE_KEYS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss")
#: Retries of one Hub operation on 429 / 5xx / connection errors, and the first wait (doubled each time).
MAX_RETRIES = 6
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 120.0
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


class ZooError(HfSoupError):
    """A zoo folder, manifest or selection is unusable (one line, says what to do)."""


class ZooManifestError(ZooError):
    """A zoo manifest cannot be found or is malformed."""


class ChecksumError(ZooError):
    """A downloaded file's SHA-256 differs from the manifest's."""


# -- scanning a built zoo ----------------------------------------------------------------------------------------
@dataclass
class ZooModel:
    """One model folder of a built zoo, with the repo name it is published under."""

    folder: Path
    name: str
    kind: str
    epoch: int
    variant: int | None
    metadata: dict
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256

    def entry(self, org: str, commit: str | None) -> dict:
        e = {"repo_id": f"{org}/{self.name}", "commit": commit, "kind": self.kind}
        if self.kind == "trunk":
            e["epoch"] = self.epoch
        else:
            e["branch_epoch"] = self.epoch
            e["variant"] = self.variant
        e["metadata"] = self.metadata
        e["scores"] = {k: self.metadata[k] for k in SCORE_KEYS if k in self.metadata}
        e["files"] = dict(self.files)
        return e


def _read_metadata(weights: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            meta = decode_metadata(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - any parse failure is a corrupt file
        raise ZooError(f"cannot read '{weights}': {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") \
            from None
    return dict(sorted(meta.items()))  # safetensors does not keep the order: keep manifests byte-stable


def _int(meta: dict, key: str, where: Path) -> int:
    try:
        return int(meta[key])
    except (KeyError, TypeError, ValueError):
        raise ZooError(f"'{where}' has no integer '{key}' in its safetensors metadata: is it a zoo model folder "
                       f"written by hfsoup's training?") from None


def repo_name(kind: str, epoch: int, variant: int | None, prefix: str = DEFAULT_PREFIX) -> str:
    """``{prefix}-trunk-e{epoch:03d}`` or ``{prefix}-b{epoch:03d}-v{variant}``."""
    return f"{prefix}-trunk-e{epoch:03d}" if kind == "trunk" else f"{prefix}-b{epoch:03d}-v{variant}"


def scan_zoo(root: str | Path, prefix: str = DEFAULT_PREFIX) -> list[ZooModel]:
    """The model folders of a built zoo (``trunk/*``, ``branches/*``), sorted trunk first, then by epoch, variant."""
    root = Path(root)
    if not root.is_dir():
        raise ZooError(f"zoo folder '{root}' does not exist: build one with `hfsoup zoo build` first")
    models: dict[str, ZooModel] = {}
    for sub in ("trunk", "branches"):
        base = root / sub
        if not base.is_dir():
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            weights = folder / WEIGHTS_NAME
            if not weights.is_file() or not (folder / CONFIG_NAME).is_file():
                continue
            meta = _read_metadata(weights)
            kind = meta.get("kind") or ("trunk" if sub == "trunk" else "branch")
            if kind not in ("trunk", "branch"):
                raise ZooError(f"'{folder}': metadata kind must be 'trunk' or 'branch', not {kind!r}")
            if kind == "trunk":
                epoch, variant = _int(meta, "epoch", folder), None
            else:
                epoch, variant = _int(meta, "branch_epoch", folder), _int(meta, "variant", folder)
            name = repo_name(kind, epoch, variant, prefix)
            if name in models:
                raise ZooError(f"'{folder}' and '{models[name].folder}' would both be published as '{name}'")
            files = {f: sha256_file(folder / f) for f in MODEL_FILES if (folder / f).is_file()}
            models[name] = ZooModel(folder, name, kind, epoch, variant, meta, files)
    if not models:
        raise ZooError(f"no model folders under '{root}/trunk' or '{root}/branches': is this a built zoo?")
    return sorted(models.values(), key=lambda m: (m.kind != "trunk", m.epoch, m.variant or 0))


# -- retries -----------------------------------------------------------------------------------------------------
def _status(e: BaseException) -> int | None:
    return getattr(getattr(e, "response", None), "status_code", None)


def _retry_after(e: BaseException) -> float | None:
    try:
        return float(e.response.headers.get("Retry-After"))  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        return None


def with_retries(fn: Callable, what: str, *, max_retries: int = MAX_RETRIES, base: float | None = None,
                 sleep: Callable[[float], None] = time.sleep):
    """Call ``fn()``; on HTTP 429 / 5xx or a connection error wait ``base·2^k`` seconds (or the server's
    ``Retry-After``, capped) and try again, at most ``max_retries`` times. Other errors, and the last one, become a
    one-line :class:`~hfsoup.errors.PushError`."""
    from huggingface_hub.errors import HfHubHTTPError

    base = BACKOFF_BASE_S if base is None else base
    attempt = 0
    while True:
        try:
            return fn()
        except HfHubHTTPError as e:
            status = _status(e)
            transient = status is not None and (status == 429 or status >= 500)
            if not transient or attempt >= max_retries:
                if status in (401, 403):
                    raise PushError(f"{what}: not allowed (HTTP {status}): log in with `hf auth login` or set "
                                    f"HF_TOKEN to a token with write access") from None
                tail = f" after {attempt + 1} attempts" if transient else ""
                raise PushError(f"{what} failed{tail}: {str(e).splitlines()[0] or f'HTTP {status}'}; rerun the "
                                f"same command to resume") from None
            wait = _retry_after(e)
            delay = min(BACKOFF_MAX_S, base * 2 ** attempt if wait is None else max(wait, base * 2 ** attempt))
        except (OSError, ConnectionError) as e:
            if attempt >= max_retries:
                raise PushError(f"{what}: cannot reach the Hub ({type(e).__name__}); check your network and rerun "
                                f"the same command to resume") from None
            delay = min(BACKOFF_MAX_S, base * 2 ** attempt)
        except Exception as e:  # httpx transport errors are not OSError
            if type(e).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore") or attempt >= max_retries:
                raise
            delay = min(BACKOFF_MAX_S, base * 2 ** attempt)
        attempt += 1
        sleep(delay)


# -- push --------------------------------------------------------------------------------------------------------
def _load_state(path: Path, org: str, prefix: str) -> dict:
    fresh = {"org": org, "prefix": prefix, "repos": {}, "collection": None, "collection_items": [],
             "manifest_commit": None}
    if not path.is_file():
        return fresh
    try:
        state = json.loads(path.read_text())
    except ValueError:
        return fresh  # a corrupt state only costs re-checks: uploads of unchanged files are skipped anyway
    if state.get("org") != org or state.get("prefix") != prefix:
        return fresh
    return {**fresh, **state}


def _manifest_card(manifest: dict) -> str:
    rows = "\n".join(
        f"| [{m['repo_id']}](https://huggingface.co/{m['repo_id']}) | {m['kind']} | "
        f"{m.get('branch_epoch', m.get('epoch'))} | {m.get('variant') or ''} | "
        f"{_fmt_pct(m['scores'].get('val_accuracy'))} | {_fmt_pct(m['scores'].get('test_accuracy'))} |"
        for m in manifest["models"])
    return ("---\ntags:\n- hfsoup\n- model-zoo\n- model-soup\n---\n\n"
            f"# {manifest['org']}/{MANIFEST_REPO_NAME}\n\n"
            f"The manifest of a model zoo published with hfsoup: {len(manifest['models'])} models, each pinned to a "
            f"commit sha in `{MANIFEST_NAME}`.\n\n```\nhfsoup zoo list {manifest['org']}/{MANIFEST_REPO_NAME}\n"
            f"hfsoup zoo pull {manifest['org']}/{MANIFEST_REPO_NAME} --out ./zoo\n```\n\n"
            "| repo | kind | epoch | variant | val acc | test acc |\n|---|---|---|---|---|---|\n" + rows + "\n")


def _fmt_pct(x) -> str:
    return "" if x is None else f"{100 * float(x):.2f}%"


def plan_push(root: str | Path, org: str, *, prefix: str = DEFAULT_PREFIX) -> list[dict]:
    """What :func:`push_zoo` would do, without any network call: one row per model with its ``status``
    (``push``, or ``done`` when the state file says this exact content was already pushed)."""
    root = Path(root)
    state = _load_state(root / STATE_NAME, org, prefix)
    rows = []
    for m in scan_zoo(root, prefix):
        repo_id = f"{org}/{m.name}"
        done = state["repos"].get(repo_id, {}).get("files") == m.files
        rows.append({**m.entry(org, state["repos"].get(repo_id, {}).get("commit") if done else None),
                     "folder": str(m.folder), "status": "done" if done else "push"})
    return rows


def push_zoo(root: str | Path, org: str, *, prefix: str = DEFAULT_PREFIX, private: bool | None = None,
             dry_run: bool = False, collection_title: str | None = None, token: str | bool | None = None,
             max_retries: int = MAX_RETRIES, backoff: float | None = None, progress: bool = True,
             log: Callable[[str], None] | None = None) -> dict:
    """Publish a built zoo: one repo ``{org}/{name}`` per model folder (one commit with weights, config and card),
    a Hub Collection holding them, and the manifest ``zoo.json`` in ``{org}/hfsoup-zoo``.

    Resumable: ``<root>/.push-state.json`` (written atomically after every repo) records what was pushed; a rerun
    skips repos whose recorded file hashes match the local ones, and the Hub client skips files whose remote blob
    is identical, so nothing is committed twice. Rate limits (429) and server errors (5xx) are retried with
    exponential backoff (``max_retries``, first wait ``backoff`` seconds). ``dry_run`` only returns the plan and
    makes no network call. Returns ``{"models": [...], "collection", "manifest_repo", "manifest_commit", ...}``.
    """
    root = Path(root)
    if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*", org or ""):
        raise ZooError(f"invalid --org '{org}': a Hub user or organisation name")
    plan = plan_push(root, org, prefix=prefix)
    manifest_repo = f"{org}/{MANIFEST_REPO_NAME}"
    if dry_run:
        return {"dry_run": True, "models": plan, "manifest_repo": manifest_repo, "collection": None}
    from huggingface_hub import HfApi

    say = log or (lambda s: None)
    api = HfApi(token=token)
    state_path = root / STATE_NAME
    state = _load_state(state_path, org, prefix)
    retry = dict(max_retries=max_retries, base=backoff)
    models = {m.name: m for m in scan_zoo(root, prefix)}
    bar = _bar(len(plan), "push", progress)
    for row in plan:
        repo_id = row["repo_id"]
        m = models[repo_id.split("/", 1)[1]]
        if row["status"] == "done":
            say(f"{repo_id}: up to date @ {row['commit']}")
            bar.update(1)
            continue
        with_retries(lambda: api.create_repo(repo_id, private=private, exist_ok=True), f"create {repo_id}", **retry)
        info = with_retries(lambda: api.upload_folder(
            folder_path=str(m.folder), repo_id=repo_id, allow_patterns=list(m.files),
            commit_message=f"Upload {m.name} with hfsoup"), f"push {repo_id}", **retry)
        state["repos"][repo_id] = {"commit": info.oid, "files": m.files}
        write_json_atomic(state_path, state)
        row["commit"], row["status"] = info.oid, "pushed"
        say(f"{repo_id}: pushed @ {info.oid}")
        bar.update(1)
    bar.close()

    title = collection_title or f"{prefix} model zoo"
    if not state.get("collection"):
        coll = with_retries(lambda: api.create_collection(title, namespace=org, private=bool(private),
                                                          exists_ok=True,
                                                          description="Published with hfsoup zoo push"),
                            "create collection", **retry)
        state["collection"] = coll.slug
        write_json_atomic(state_path, state)
    slug = state["collection"]
    items = set(state.get("collection_items") or [])
    for repo_id in [r["repo_id"] for r in plan] + [manifest_repo]:
        if repo_id in items:
            continue
        with_retries(lambda: api.add_collection_item(slug, repo_id, "model", exists_ok=True),
                     f"add {repo_id} to collection", **retry)
        items.add(repo_id)
        state["collection_items"] = sorted(items)
        write_json_atomic(state_path, state)

    manifest = {"format": MANIFEST_FORMAT, "org": org, "prefix": prefix, "collection": slug,
                "models": [{k: v for k, v in r.items() if k not in ("folder", "status")} for r in plan]}
    write_json_atomic(root / MANIFEST_NAME, manifest)
    from huggingface_hub import CommitOperationAdd

    ops = [CommitOperationAdd(MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode()),
           CommitOperationAdd(CARD_NAME, _manifest_card(manifest).encode())]
    with_retries(lambda: api.create_repo(manifest_repo, private=private, exist_ok=True), f"create {manifest_repo}",
                 **retry)
    info = with_retries(lambda: api.create_commit(manifest_repo, ops, commit_message="Update zoo manifest"),
                        f"push {manifest_repo}", **retry)
    state["manifest_commit"] = info.oid
    write_json_atomic(state_path, state)
    say(f"{manifest_repo}: manifest @ {info.oid}")
    return {"dry_run": False, "models": plan, "collection": slug, "manifest_repo": manifest_repo,
            "manifest_commit": info.oid}


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="repo", disable=not enabled)


# -- manifests ---------------------------------------------------------------------------------------------------
def validate_manifest(manifest, where: str) -> dict:
    """Check the structure of a manifest; raise :class:`ZooManifestError` naming ``where`` otherwise."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), list):
        raise ZooManifestError(f"{where} is not a zoo manifest (no 'models' list)")
    for i, m in enumerate(manifest["models"]):
        if not isinstance(m, dict) or not isinstance(m.get("repo_id"), str) or "/" not in m["repo_id"]:
            raise ZooManifestError(f"{where}: model #{i} has no repo_id 'org/name'")
        if not isinstance(m.get("commit"), str) or not _SHA_RE.match(m["commit"]):
            raise ZooManifestError(f"{where}: {m['repo_id']} has no 40-hex commit sha (was the zoo pushed?)")
        files = m.get("files")
        if not isinstance(files, dict) or not files or not all(
                isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in files.values()):
            raise ZooManifestError(f"{where}: {m['repo_id']} has no 'files' with sha256 hashes")
        if m.get("kind") not in ("trunk", "branch"):
            raise ZooManifestError(f"{where}: {m['repo_id']} has kind {m.get('kind')!r} (trunk or branch)")
    return manifest


def load_zoo_manifest(source: str | Path, *, token: str | bool | None = None) -> dict:
    """Read a zoo manifest from a Hub repo id (``org/hfsoup-zoo[@rev]``), a ``zoo.json`` file or a zoo folder.

    A built but unpublished zoo folder (no ``zoo.json``) gives a manifest without commits (listing only).
    """
    path = Path(str(source)).expanduser()
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            path = path / MANIFEST_NAME
        else:
            models = scan_zoo(path)
            return {"format": MANIFEST_FORMAT, "org": None, "prefix": None, "collection": None, "local": True,
                    "models": [m.entry("local", None) for m in models]}
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ZooManifestError(f"'{path}' is not valid JSON ({e})") from None
        return validate_manifest(manifest, f"'{path}'")
    text = str(source)
    if text.startswith((".", "/", "~")) or text.endswith(".json"):
        raise ZooManifestError(f"'{text}' does not exist: pass a Hub repo id (org/hfsoup-zoo), a zoo.json or a "
                               f"zoo folder")
    return _download_manifest(text, token)


def _download_manifest(text: str, token) -> dict:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    repo_id, _, revision = text.partition("@")
    if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", repo_id):
        raise ZooManifestError(f"'{text}' is not a manifest repo id (org/hfsoup-zoo), zoo.json file or zoo folder")
    try:
        path = hf_hub_download(repo_id, MANIFEST_NAME, revision=revision or None, token=token)
    except RepositoryNotFoundError:
        raise ZooManifestError(f"zoo manifest repo '{repo_id}' not found on {constants.ENDPOINT}: check the id, or "
                               f"log in (hf auth login / HF_TOKEN) if it is private") from None
    except RevisionNotFoundError:
        raise ZooManifestError(f"revision '{revision}' not found in '{repo_id}'") from None
    except EntryNotFoundError:
        raise ZooManifestError(f"'{repo_id}' has no {MANIFEST_NAME}: pass the manifest repo "
                               f"({repo_id.split('/')[0]}/{MANIFEST_REPO_NAME}) written by `hfsoup zoo push`") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise ZooManifestError(f"{repo_id}: {MANIFEST_NAME} is not in the local HF cache and the Hub cannot be "
                               f"reached (offline or HF_HUB_OFFLINE=1)") from None
    except HfHubHTTPError as e:
        raise ZooManifestError(f"could not fetch {MANIFEST_NAME} from {repo_id}: {str(e).splitlines()[0]}") from None
    try:
        manifest = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError):
        raise ZooManifestError(f"{repo_id}/{MANIFEST_NAME} is not valid JSON") from None
    return validate_manifest(manifest, f"{repo_id}/{MANIFEST_NAME}")


def list_zoo(source: str | Path, *, token: str | bool | None = None, epochs: str | None = None,
             variants: str | None = None) -> list[dict]:
    """The models of a zoo manifest (see :func:`load_zoo_manifest`), optionally filtered, one flat row each:
    ``repo_id, commit, kind, epoch, variant, lr_scale, momentum_scale, weight_decay_scale`` and the scores."""
    manifest = load_zoo_manifest(source, token=token)
    rows = []
    for m in select_models(manifest["models"], epochs=epochs, variants=variants):
        meta = m.get("metadata") or {}
        rows.append({"repo_id": m["repo_id"], "commit": m.get("commit"), "kind": m["kind"],
                     "epoch": m.get("branch_epoch", m.get("epoch")), "variant": m.get("variant"),
                     **{k: meta.get(k) for k in ("lr_scale", "momentum_scale", "weight_decay_scale")},
                     **{k: (m.get("scores") or {}).get(k, meta.get(k)) for k in SCORE_KEYS}})
    return rows


# -- selection ---------------------------------------------------------------------------------------------------
def parse_int_spec(spec: str | None, what: str) -> set[int] | None:
    """``"150-300"``, ``"50,60,100-120"`` → a set of ints (ranges inclusive); ``None``/empty → no filter."""
    if spec is None or not str(spec).strip():
        return None
    out: set[int] = set()
    for part in str(spec).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise ZooError(f"bad {what} '{spec}': use numbers and inclusive ranges, e.g. 150-300 or 1,3")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ZooError(f"bad {what} '{spec}': range {lo}-{hi} is empty")
        out.update(range(lo, hi + 1))
    return out


def select_models(models: Iterable[dict], *, epochs: str | None = None, variants: str | None = None,
                  kind: str | None = None) -> list[dict]:
    """Filter manifest entries: ``epochs`` matches the branch epoch (or a trunk checkpoint's epoch), ``variants``
    keeps branches of those variants only (trunk checkpoints have none), ``kind`` is ``trunk``/``branch``."""
    eps, vs = parse_int_spec(epochs, "--epochs"), parse_int_spec(variants, "--variants")
    out = []
    for m in models:
        if kind and m["kind"] != kind:
            continue
        if eps is not None and m.get("branch_epoch", m.get("epoch")) not in eps:
            continue
        if vs is not None and m.get("variant") not in vs:
            continue
        out.append(m)
    return out


# -- pull --------------------------------------------------------------------------------------------------------
def _verified(folder: Path, files: dict[str, str]) -> list[str]:
    """Names of the files in ``folder`` that are missing or whose sha256 differs."""
    return [n for n, h in files.items() if not (folder / n).is_file() or sha256_file(folder / n) != h]


def _pull_one(m: dict, out: Path, token) -> dict:
    from huggingface_hub import snapshot_download

    name = m["repo_id"].split("/", 1)[1]
    dest = out / name
    if dest.is_dir() and not _verified(dest, m["files"]):
        return {"repo_id": m["repo_id"], "commit": m["commit"], "folder": str(dest), "status": "verified"}
    partial = out / ".partial" / name
    partial.mkdir(parents=True, exist_ok=True)
    snapshot_download(m["repo_id"], revision=m["commit"], local_dir=str(partial), allow_patterns=list(m["files"]),
                      token=token)
    bad = _verified(partial, m["files"])
    if bad:
        shutil.rmtree(partial, ignore_errors=True)
        raise ChecksumError(f"{m['repo_id']}@{m['commit'][:12]}: sha256 of {', '.join(bad)} does not match the "
                            f"manifest: the download is corrupt or the manifest is stale; nothing was kept")
    shutil.rmtree(partial / ".cache", ignore_errors=True)
    if dest.exists():
        shutil.rmtree(dest)
    partial.replace(dest)
    return {"repo_id": m["repo_id"], "commit": m["commit"], "folder": str(dest), "status": "downloaded"}


def pull_zoo(source: str | Path, out: str | Path, *, epochs: str | None = None, variants: str | None = None,
             kind: str | None = None, workers: int = 4, token: str | bool | None = None,
             progress: bool = True) -> dict:
    """Download the selected models of a zoo manifest into ``out/<repo-name>/``, each pinned to the manifest's
    commit sha, ``workers`` at a time, and verify every file's SHA-256 against the manifest.

    Folders that already verify are skipped, and downloads go through ``out/.partial/`` and are moved into place
    only once verified, so an interrupted pull resumes where it stopped. Writes ``out/zoo.json`` (the manifest).
    Raises :class:`ChecksumError` on a mismatch, :class:`ZooManifestError` for a bad manifest.
    """
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    manifest = load_zoo_manifest(source, token=token)
    if manifest.get("local"):
        raise ZooManifestError(f"'{source}' is an unpublished zoo folder (no {MANIFEST_NAME} with commit shas): "
                               f"push it with `hfsoup zoo push` first, or use its folders directly")
    if workers < 1:
        raise ZooError(f"--workers must be at least 1 (got {workers})")
    selected = select_models(manifest["models"], epochs=epochs, variants=variants, kind=kind)
    if not selected:
        raise ZooError(f"no model of the manifest matches the selection (epochs={epochs}, variants={variants}): "
                       f"see `hfsoup zoo list {source}`")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, errors = [], []
    bar = _bar(len(selected), "pull", progress)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_pull_one, m, out, token): m for m in selected}
        for fut in as_completed(futures):
            m = futures[fut]
            try:
                results.append(fut.result())
            except HfSoupError as e:
                errors.append(e)
            except RepositoryNotFoundError:
                errors.append(ZooError(f"{m['repo_id']} (listed in the manifest) not found on the Hub"))
            except LocalEntryNotFoundError:
                errors.append(ZooError(f"{m['repo_id']}@{m['commit'][:12]} is not cached and the Hub cannot be "
                                       f"reached (offline or HF_HUB_OFFLINE=1)"))
            except HfHubHTTPError as e:
                errors.append(ZooError(f"could not download {m['repo_id']}: {str(e).splitlines()[0]}"))
            bar.update(1)
    bar.close()
    write_json_atomic(out / MANIFEST_NAME, manifest)
    partial = out / ".partial"
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more failures; rerun to resume)" if len(errors) > 1 else " (rerun to resume)"
        raise type(first)(f"{first}{more}")
    order = {m["repo_id"]: i for i, m in enumerate(selected)}
    results.sort(key=lambda r: order[r["repo_id"]])
    return {"out": str(out), "manifest": str(out / MANIFEST_NAME), "models": results}


__all__ = ["push_zoo", "plan_push", "scan_zoo", "load_zoo_manifest", "list_zoo", "pull_zoo", "select_models",
           "parse_int_spec", "with_retries", "repo_name", "ZooError", "ZooManifestError", "ChecksumError"]
