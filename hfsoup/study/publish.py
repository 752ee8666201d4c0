"""``hfsoup study push``: a study's tables as a Hub dataset, with a dataset card (torch-free).

The dataset repo holds ``pairs.parquet`` (config ``pairs``, the default), ``models.parquet`` (config ``models``),
``study.json`` and a generated ``README.md`` whose YAML ``configs`` make both tables load with
``datasets.load_dataset(repo_id, "pairs")``. The upload goes through the one upload path,
:func:`hfsoup.hub.upload.upload_folder`, as one commit.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hfsoup.errors import HfSoupError
from hfsoup.study.table import (MODEL_COLUMNS, MODELS_FILE, PAIR_COLUMNS, PAIRS_FILE, STUDY_FILE, merge_study,
                                read_study_json)

__all__ = ["study_card", "push_study"]

_COLUMN_DOCS = {
    "row_id": "content id of the row: hash of the two weight hashes, α and the data fingerprints",
    "status": "`ok`, or `failed` (see `error`)",
    "model_a": "short name of model A (the soup is (1 − α)·A + α·B)",
    "sha_a": "SHA-256 of model A's weights file",
    "epoch_a": "branch epoch of A (a trunk checkpoint's epoch); null if unknown",
    "shared_epochs": "the smaller of the two branch epochs",
    "acc_gain": "soup_acc − max(acc_a, acc_b) (fraction; positive: the soup beats both)",
    "loss_gain": "min(loss_a, loss_b) − soup_loss (positive is good)",
    "collapsed": "soup accuracy below 5 %",
    "l2": "L2 distance of the flattened parameters (float64; BN running statistics and integer buffers excluded)",
    "cosine": "cosine similarity of the flattened parameters (same exclusions)",
    "kl": "mean over test images of ½·(KL(p_a‖p_b) + KL(p_b‖p_a)) of the softmax outputs",
    "mse": "mean squared difference of the logits",
    "cka_logits": "linear CKA of the logits",
    "cka_features": "linear CKA of the penultimate (pooled) features",
    "disagreement": "fraction of test images with different top-1 predictions",
    "ensemble_acc": "accuracy of the two-model logit ensemble",
    "c_soup_acc": "soup accuracy on CIFAR-100-C, mean over the corruptions at `c_severity` (null without it)",
    "finished_at": "unix time the row was computed",
}


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def study_card(out: str | Path, repo_id: str | None = None) -> str:
    """The dataset card (``README.md``) of a merged study folder."""
    import pyarrow.parquet as pq

    out = Path(out)
    study = read_study_json(out)
    settings = study.get("settings") or {}
    table = pq.read_table(out / PAIRS_FILE, columns=["status", "alpha", "acc_gain", "model_a", "model_b"])
    rows = table.to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    mid = [r for r in ok if r["alpha"] == 0.5 and r["acc_gain"] is not None]
    positive = sum(r["acc_gain"] > 0 for r in mid)
    pairs = {(r["model_a"], r["model_b"]) for r in rows}
    lines = [
        "---",
        "tags:", "- model-soups", "- model-merging", "- hfsoup",
        "configs:",
        "- config_name: pairs", f"  data_files: {PAIRS_FILE}", "  default: true",
        "- config_name: models", f"  data_files: {MODELS_FILE}",
        "---",
        "",
        f"# Pair study{f' of {repo_id}' if repo_id else ''}",
        "",
        "Every pairwise weight-space soup of a set of models, with the soup's gain over the better ingredient and the "
        "pair's weight- and output-space similarity, computed with `hfsoup study run` (hfsoup: model soups for "
        "timm models on the Hugging Face Hub).",
        "",
        "| | |", "|---|---|",
        f"| models | {len(study.get('models') or [])} ({study.get('source_kind', '?')}: "
        f"`{study.get('source', '?')}`) |",
        f"| pairs | {len(pairs)} |",
        f"| rows (pair, α) | {len(rows)} ({len(rows) - len(ok)} failed) |",
        f"| α | {', '.join(f'{a:g}' for a in study.get('alphas') or [])} |",
        f"| test data | `{settings.get('dataset')}` test split, {settings.get('num_samples')} images, fingerprint "
        f"`{str(settings.get('test_fingerprint'))[:16]}…` |",
        f"| corrupted data | " + (f"`{settings.get('corrupted_dataset')}`, severity {settings.get('severity')}, "
                                 f"{len(settings.get('corruptions') or [])} corruptions |"
                                 if settings.get("corrupted_dataset") else "none |"),
        f"| numerics | {settings.get('precision')}; integer buffers: {settings.get('integer_policy')} |",
        f"| positive midpoint soups (α = 0.5, acc_gain > 0) | "
        + (f"{positive} of {len(mid)} ({_pct(positive / len(mid))}) |" if mid else "n/a |"),
        "",
        "## Load",
        "",
        "```python",
        "from datasets import load_dataset",
        f"pairs = load_dataset(\"{repo_id or '<repo>'}\", \"pairs\", split=\"train\").to_pandas()",
        f"models = load_dataset(\"{repo_id or '<repo>'}\", \"models\", split=\"train\").to_pandas()",
        "```",
        "",
        "## Columns of `pairs`",
        "",
        "Accuracies are fractions in [0, 1]; losses are mean cross-entropies. `*_a`/`*_b` columns describe the two "
        "ingredients (`model_`, `repo_`, `commit_`, `sha_`, `epoch_`, `variant_`, `kind_`, `acc_`, `loss_`); "
        "`c_*` columns are the same on CIFAR-100-C (mean over corruptions).",
        "",
        "| column | meaning |", "|---|---|",
        *[f"| `{c}` | {_COLUMN_DOCS[c]} |" for c in PAIR_COLUMNS if c in _COLUMN_DOCS],
        "",
        f"`models` has one row per model: {', '.join(f'`{c}`' for c in MODEL_COLUMNS)}.",
        "",
    ]
    return "\n".join(lines)


def _stale(out: Path) -> bool:
    shards = sorted((out / "shards").glob("*.jsonl")) if (out / "shards").is_dir() else []
    target = out / PAIRS_FILE
    if not target.is_file():
        return True
    return any(p.stat().st_mtime > target.stat().st_mtime for p in shards)


def push_study(out: str | Path, repo_id: str, *, private: bool | None = None, create_pr: bool = False,
               revision: str | None = None, token: str | bool | None = None):
    """Publish ``OUT``'s tables (merged first if the shards are newer) with a dataset card to the dataset repo
    ``repo_id`` in one commit; returns the :class:`~hfsoup.hub.upload.UploadResult`."""
    from hfsoup.hub.upload import upload_folder

    out = Path(out)
    if not out.is_dir() or not (out / STUDY_FILE).is_file():
        raise HfSoupError(f"'{out}' is not a study folder (no {STUDY_FILE}): pass the --out folder of "
                          f"`hfsoup study run`")
    if _stale(out):
        merge_study(out)
    with tempfile.TemporaryDirectory(prefix="hfsoup-study-push-") as tmp:
        stage = Path(tmp)
        for name in (PAIRS_FILE, MODELS_FILE, STUDY_FILE):
            if (out / name).is_file():
                shutil.copy2(out / name, stage / name)
        (stage / "README.md").write_text(study_card(out, repo_id), encoding="utf-8")
        return upload_folder(stage, repo_id, repo_type="dataset", private=private, revision=revision,
                             create_pr=create_pr, token=token,
                             commit_message=f"Upload the pair study {out.name} with hfsoup")


def fetch_study(repo_id: str, *, revision: str | None = None, token: str | bool | None = None) -> Path:
    """The folder of a study pushed with :func:`push_study`: its tables fetched from the Hub dataset ``repo_id``
    (through the HF cache, so ``HF_HUB_OFFLINE=1`` works once fetched). Only the table files are downloaded."""
    from huggingface_hub import snapshot_download

    from hfsoup.core.hubclient import configure
    from hfsoup.errors import client_error_types, from_client_error

    configure()  # a Hub that does not answer fails within HFSOUP_HUB_TIMEOUT
    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, token=token,
                                        allow_patterns=[PAIRS_FILE, MODELS_FILE, STUDY_FILE]))
    except client_error_types() as e:
        raise from_client_error(e, f"study dataset '{repo_id}'", kind="dataset", repo_id=repo_id,
                                revision=revision) from None
    if not (folder / PAIRS_FILE).is_file():
        raise HfSoupError(f"the Hub dataset '{repo_id}' has no {PAIRS_FILE}: is it a study pushed with "
                          f"`hfsoup study push`?", repo_id=repo_id)
    return folder
