"""The study's tables: column names and the files of a study folder (torch-free).

A study folder ``OUT`` holds::

    OUT/shards/*.jsonl     one file per process or ``--shard`` job, one JSON row per (pair, α) (hfsoup.study.store)
    OUT/pairs.parquet      the merged pair table, one row per (pair, α), sorted by row id (deterministic bytes)
    OUT/models.parquet     one row per model
    OUT/study.json         the run's settings, models and plan summary
    OUT/plan.txt           the row ids of the latest run's plan (for ``hfsoup study status``)

Readers (pandas, ``datasets.load_dataset("parquet", data_files=…)``, :mod:`hfsoup.study.analysis`) rely on the
column names below; they are a contract between the study run and the study report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hfsoup.errors import HfSoupError
from hfsoup.study import store

__all__ = ["PAIR_COLUMNS", "PAIR_TYPES", "MODEL_COLUMNS", "MODEL_TYPES", "PAIRS_FILE", "MODELS_FILE", "STUDY_FILE",
           "PLAN_FILE", "MergeResult", "merge_study", "read_study_json", "read_plan", "study_status"]

PAIRS_FILE = "pairs.parquet"
MODELS_FILE = "models.parquet"
STUDY_FILE = "study.json"
PLAN_FILE = "plan.txt"

#: Columns of ``pairs.parquet``, in order. Accuracies are fractions in [0, 1]; gains: ``acc_gain = soup_acc −
#: max(acc_a, acc_b)``, ``loss_gain = min(loss_a, loss_b) − soup_loss`` (positive is good); ``c_*`` are the means over
#: the corruptions at ``c_severity`` (null without corrupted data); similarity columns are per pair (the same for
#: every α of a pair).
PAIR_COLUMNS = (
    "row_id", "status", "error",
    "model_a", "model_b", "repo_a", "repo_b", "commit_a", "commit_b", "sha_a", "sha_b",
    "epoch_a", "epoch_b", "variant_a", "variant_b", "kind_a", "kind_b", "shared_epochs", "alpha",
    "acc_a", "loss_a", "acc_b", "loss_b", "soup_acc", "soup_loss", "acc_gain", "loss_gain", "collapsed",
    "l2", "cosine", "kl", "mse", "cka_logits", "cka_features", "disagreement", "ensemble_acc",
    "c_acc_a", "c_loss_a", "c_acc_b", "c_loss_b", "c_soup_acc", "c_soup_loss", "c_acc_gain", "c_loss_gain",
    "c_severity", "test_fingerprint", "corrupted_fingerprint", "finished_at",
)

_STRINGS = ("row_id", "status", "error", "model_a", "model_b", "repo_a", "repo_b", "commit_a", "commit_b", "sha_a",
            "sha_b", "kind_a", "kind_b", "test_fingerprint", "corrupted_fingerprint")
_INTS = ("epoch_a", "epoch_b", "variant_a", "variant_b", "shared_epochs", "c_severity")
#: Parquet type of every column of ``pairs.parquet`` (kept when a column is all null, e.g. without corrupted data).
PAIR_TYPES = {c: "string" if c in _STRINGS else "int64" if c in _INTS else "bool" if c == "collapsed" else "float64"
              for c in PAIR_COLUMNS}

#: Columns of ``models.parquet``, in order (``c_acc``/``c_loss``: mean over the corruptions; null without them).
MODEL_COLUMNS = ("name", "repo", "commit", "sha", "epoch", "variant", "kind", "acc", "loss", "c_acc", "c_loss")

#: Parquet type of every column of ``models.parquet``.
MODEL_TYPES = {c: "string" if c in ("name", "repo", "commit", "sha", "kind") else
               "int64" if c in ("epoch", "variant") else "float64" for c in MODEL_COLUMNS}


def read_study_json(out: str | Path) -> dict:
    """``OUT/study.json`` as a dict; :class:`HfSoupError` when it is missing or not valid JSON."""
    path = Path(out) / STUDY_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HfSoupError(f"no {STUDY_FILE} in '{out}': is it the --out folder of `hfsoup study run`?") from None
    except (OSError, ValueError) as e:
        raise HfSoupError(f"'{path}' is not readable JSON ({type(e).__name__}): rerun `hfsoup study run` to "
                          f"rewrite it") from None
    if not isinstance(doc, dict):
        raise HfSoupError(f"'{path}' is not a study description (a JSON object expected)")
    return doc


def read_plan(out: str | Path) -> list[str] | None:
    """Row ids of the latest run's plan (``OUT/plan.txt``), None when there is none."""
    path = Path(out) / PLAN_FILE
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class MergeResult:
    """The merged tables of a study folder."""

    pairs_path: Path
    models_path: Path | None
    rows: int
    failed: int
    models: int

    def to_dict(self) -> dict:
        return {"pairs": str(self.pairs_path), "models": str(self.models_path) if self.models_path else None,
                "rows": self.rows, "failed": self.failed, "models_count": self.models}


def merge_study(out: str | Path) -> MergeResult:
    """Write ``OUT/pairs.parquet`` (every row of every shard, one per id, sorted by id, columns in
    :data:`PAIR_COLUMNS` order) and ``OUT/models.parquet`` (from ``study.json``), atomically.

    The same rows give the same bytes whichever processes computed them, in whichever order and shard split.
    """
    out = Path(out)
    if not out.is_dir():
        raise HfSoupError(f"no study folder at '{out}': pass the --out folder of `hfsoup study run`")
    rows = store.read_rows(out)
    pairs_path = store.write_table(out / PAIRS_FILE, rows, order_by=("row_id",), leading=PAIR_COLUMNS,
                                   types=PAIR_TYPES)
    models_path = None
    models: list = []
    if (out / STUDY_FILE).is_file():
        models = [m for m in read_study_json(out).get("models") or [] if isinstance(m, dict)]
        models_path = store.write_table(out / MODELS_FILE, [{c: m.get(c) for c in MODEL_COLUMNS} for m in models],
                                        order_by=("name", "sha"), leading=MODEL_COLUMNS,
                                        types=MODEL_TYPES)
    return MergeResult(pairs_path, models_path, len(rows), sum(r["status"] == "failed" for r in rows), len(models))


def study_status(out: str | Path) -> store.StudyStatus:
    """Progress of a study folder: :func:`hfsoup.study.store.status` with ``total`` the latest plan's rows and
    ``remaining`` the planned ids not recorded yet (rows of earlier plans do not count as progress)."""
    plan = read_plan(out) if Path(out).is_dir() else None
    st = store.status(out, total=len(plan) if plan is not None else None)
    if plan is not None:
        recorded = {row["row_id"] for row in store.read_rows(out)}
        st.remaining = len(set(plan) - recorded)
    return st
