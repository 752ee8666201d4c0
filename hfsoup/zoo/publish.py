"""Publishing a built zoo: one repo per model, a Hub Collection, and the manifest repo ``{org}/hfsoup-zoo``.

Every upload goes through :func:`hfsoup.hub.upload.upload_folder` and every other Hub call through
:func:`hfsoup.hub.retry.with_retries` (the one back-off policy and error mapping). Resumable: the state file
``<zoo>/.push-state.json`` records what was pushed. The plan (and ``--dry-run``) needs no network and no torch.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hfsoup.core.files import atomic_write_json, atomic_write_text, dumps_json
from hfsoup.errors import InvalidParameterError
from hfsoup.hub.retry import BACKOFF_BASE_S, MAX_RETRIES, with_retries
from hfsoup.zoo.layout import CARD_NAME, ZooModel, scan_zoo, zoo_prefix
from hfsoup.zoo.manifest import MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_REPO_NAME, repo_bar

STATE_NAME = ".push-state.json"
_ORG_RE = re.compile(r"[A-Za-z0-9][\w.\-]*")


@dataclass
class PushedModel:
    """One model of a push: its folder, repo, and ``status`` (``push`` planned, ``done`` already on the Hub with
    this content, ``pushed`` by this run) with the commit it is at."""

    model: ZooModel
    org: str
    status: str
    commit: str | None = None

    @property
    def repo_id(self) -> str:
        return f"{self.org}/{self.model.name}"

    def entry(self) -> dict:
        """The model's manifest entry (repo id, commit, kind, epochs, metadata, scores, file hashes)."""
        return self.model.entry(self.org, self.commit)

    def to_dict(self) -> dict:
        return {**self.entry(), "folder": str(self.model.folder), "status": self.status}


@dataclass
class PushResult:
    """What :func:`push_zoo` did (or, with ``dry_run``, would do)."""

    dry_run: bool
    models: list[PushedModel]
    manifest_repo: str
    collection: str | None = None
    manifest_commit: str | None = None

    def to_dict(self) -> dict:
        d = {"dry_run": self.dry_run, "models": [m.to_dict() for m in self.models],
             "manifest_repo": self.manifest_repo, "collection": self.collection}
        if not self.dry_run:
            d["manifest_commit"] = self.manifest_commit
        return d


# -- state -------------------------------------------------------------------------------------------------------
def _load_state(path: Path, org: str, prefix: str) -> dict:
    fresh = {"org": org, "prefix": prefix, "repos": {}, "collection": None, "collection_items": [],
             "manifest_commit": None}
    if not path.is_file():
        return fresh
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return fresh  # a corrupt state only costs re-checks: uploads of unchanged files are skipped anyway
    if not isinstance(state, dict) or state.get("org") != org or state.get("prefix") != prefix:
        return fresh
    return {**fresh, **state}


def published_files(model: ZooModel, repo_id: str) -> dict[str, str]:
    """The SHA-256 of each file of ``model`` as it is published to ``repo_id``: the local files', except a card
    whose usage snippet is filled in with the repo id on the way (:func:`hfsoup.hub.upload.card_for_repo`)."""
    import hashlib

    from hfsoup.hub.upload import card_for_repo, card_placeholder

    files = dict(model.files)
    if CARD_NAME in files and card_placeholder(model.folder):
        text = card_for_repo((Path(model.folder) / CARD_NAME).read_text(encoding="utf-8"), repo_id)
        files[CARD_NAME] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return files


def plan_push(root: str | Path, org: str, *, prefix: str | None = None,
              branches_only: bool = False) -> list[PushedModel]:
    """What :func:`push_zoo` would do, without any network call: one :class:`PushedModel` per model folder with
    status ``push``, or ``done`` when the state file says this exact content was already pushed. ``prefix``
    defaults to the zoo's own (:func:`~hfsoup.zoo.layout.zoo_prefix`); ``branches_only`` leaves out the trunk
    checkpoints."""
    root = Path(root)
    prefix = prefix or zoo_prefix(root)
    state = _load_state(root / STATE_NAME, org, prefix)
    rows = []
    for m in scan_zoo(root, prefix):
        if branches_only and m.kind != "branch":
            continue
        m.files = published_files(m, f"{org}/{m.name}")  # the manifest records what the Hub holds
        pushed = state["repos"].get(f"{org}/{m.name}", {})
        done = pushed.get("files") == m.files
        rows.append(PushedModel(m, org, "done" if done else "push", pushed.get("commit") if done else None))
    return rows


def manifest_document(org: str, prefix: str, collection: str | None, models: list[PushedModel]) -> dict:
    """The manifest ``zoo.json`` of a pushed zoo."""
    return {"format": MANIFEST_FORMAT, "org": org, "prefix": prefix, "collection": collection,
            "models": [m.entry() for m in models]}


def manifest_card(manifest: dict) -> str:
    """The README of the manifest repo: how to list and pull the zoo, and a table of its models."""
    def pct(x) -> str:
        return "" if x is None else f"{100 * float(x):.2f}%"

    rows = "\n".join(
        f"| [{m['repo_id']}](https://huggingface.co/{m['repo_id']}) | {m['kind']} | "
        f"{m.get('branch_epoch', m.get('epoch'))} | {m.get('variant') or ''} | "
        f"{pct(m['scores'].get('val_accuracy'))} | {pct(m['scores'].get('test_accuracy'))} |"
        for m in manifest["models"])
    repo = f"{manifest['org']}/{MANIFEST_REPO_NAME}"
    return ("---\ntags:\n- hfsoup\n- model-zoo\n- model-soup\n---\n\n"
            f"# {repo}\n\n"
            f"The manifest of a model zoo published with hfsoup: {len(manifest['models'])} models, each pinned to a "
            f"commit sha in `{MANIFEST_NAME}`.\n\n```\nhfsoup zoo list {repo}\nhfsoup zoo pull {repo} --out ./zoo\n"
            "```\n\n| repo | kind | epoch | variant | val acc | test acc |\n|---|---|---|---|---|---|\n" + rows + "\n")


# -- push --------------------------------------------------------------------------------------------------------
def push_zoo(root: str | Path, org: str, *, prefix: str | None = None, private: bool | None = None,
             dry_run: bool = False, collection_title: str | None = None, token: str | bool | None = None,
             max_retries: int = MAX_RETRIES, backoff: float = BACKOFF_BASE_S, progress: bool = True,
             branches_only: bool = False, log: Callable[[str], None] | None = None) -> PushResult:
    """Publish a built zoo: one repo ``{org}/{name}`` per model folder (one commit with weights, config and card),
    a Hub Collection holding them, and the manifest ``zoo.json`` in ``{org}/hfsoup-zoo`` (also written to
    ``<root>/zoo.json``).

    Every model folder is published: the branches and, unless ``branches_only``, the trunk checkpoints they start
    from (the default config: 104 branches, 4 variants x 26 branch epochs, and 30 trunk checkpoints). Repo names
    start with ``prefix``, by default the zoo's ``{architecture}-{dataset}`` (``resnet50-cifar100`` for the
    default config, see :func:`~hfsoup.zoo.layout.zoo_prefix`). Each card's usage snippet names its repo.

    Resumable: ``<root>/.push-state.json`` (written atomically after every step) records what was pushed; a rerun
    skips repos whose recorded file hashes match the local ones, and the Hub client skips files whose remote blob
    is identical, so nothing is committed twice. Rate limits (429), server errors (5xx) and connection failures are
    retried with exponential backoff (``max_retries``, first wait ``backoff`` seconds); then a one-line
    :class:`~hfsoup.errors.PushError` says to rerun. ``dry_run`` only returns the plan: no network call.
    """
    root = Path(root)
    if not _ORG_RE.fullmatch(org or ""):
        raise InvalidParameterError(f"invalid --org '{org}': a Hub user or organisation name", parameter="org")
    prefix = prefix or zoo_prefix(root)
    plan = plan_push(root, org, prefix=prefix, branches_only=branches_only)
    from hfsoup.zoo.manifest import ZooManifestError, check_repo_id

    for row in plan:  # a --prefix the Hub would refuse fails here, before any network call
        try:
            check_repo_id(row.repo_id, "zoo push")
        except ZooManifestError as e:
            raise InvalidParameterError(f"{e}: pass another --prefix", parameter="prefix") from None
    manifest_repo = f"{org}/{MANIFEST_REPO_NAME}"
    if dry_run:
        return PushResult(dry_run=True, models=plan, manifest_repo=manifest_repo)
    from huggingface_hub import HfApi

    from hfsoup.hub.upload import card_staged, upload_folder

    say = log or (lambda s: None)
    api = HfApi(token=token)
    state_path = root / STATE_NAME
    state = _load_state(state_path, org, prefix)
    retry = dict(max_retries=max_retries, base=backoff, kind="push")
    bar = repo_bar(len(plan), "push", progress)
    for row in plan:
        if row.status == "done":
            say(f"{row.repo_id}: up to date @ {row.commit}")
            bar.update(1)
            continue
        with card_staged(row.model.folder, list(row.model.files), row.repo_id) as folder:
            up = upload_folder(folder, row.repo_id, files=list(row.model.files), private=private, token=token,
                               commit_message=f"Upload {row.model.name} with hfsoup", max_retries=max_retries,
                               backoff=backoff)
        row.commit, row.status = up.commit, "pushed"
        state["repos"][row.repo_id] = {"commit": up.commit, "files": row.model.files}
        atomic_write_json(state_path, state)
        say(f"{row.repo_id}: pushed @ {up.commit}")
        bar.update(1)
    bar.close()

    if not state.get("collection"):
        title = collection_title or f"{prefix} model zoo"
        coll = with_retries(lambda: api.create_collection(title, namespace=org, private=bool(private), exists_ok=True,
                                                          description="Published with hfsoup zoo push"),
                            "create collection", repo_id=manifest_repo, **retry)
        state["collection"] = coll.slug
        atomic_write_json(state_path, state)
    slug = state["collection"]
    items = set(state.get("collection_items") or [])
    for repo_id in [r.repo_id for r in plan] + [manifest_repo]:
        if repo_id in items:
            continue
        with_retries(lambda: api.add_collection_item(slug, repo_id, "model", exists_ok=True),
                     f"add {repo_id} to collection", repo_id=repo_id, **retry)
        items.add(repo_id)
        state["collection_items"] = sorted(items)
        atomic_write_json(state_path, state)

    manifest = manifest_document(org, prefix, slug, plan)
    atomic_write_json(root / MANIFEST_NAME, manifest)
    with tempfile.TemporaryDirectory(prefix="hfsoup-zoo-manifest-") as tmp:
        atomic_write_text(Path(tmp) / MANIFEST_NAME, dumps_json(manifest))
        atomic_write_text(Path(tmp) / CARD_NAME, manifest_card(manifest))
        up = upload_folder(tmp, manifest_repo, files=[MANIFEST_NAME, CARD_NAME], private=private, token=token,
                           commit_message="Update zoo manifest", max_retries=max_retries, backoff=backoff)
    state["manifest_commit"] = up.commit
    atomic_write_json(state_path, state)
    say(f"{manifest_repo}: manifest @ {up.commit}")
    return PushResult(dry_run=False, models=plan, manifest_repo=manifest_repo, collection=slug,
                      manifest_commit=up.commit)


__all__ = ["push_zoo", "plan_push", "manifest_document", "manifest_card", "PushedModel", "PushResult", "STATE_NAME"]
