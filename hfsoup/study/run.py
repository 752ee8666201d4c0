"""``hfsoup study run``: plan the rows of a study, skip those already done, compute this process's share, merge.

Steps of :func:`run_study`:

1. **Plan** (:func:`plan_study`, nothing written): resolve the models, load the test split (and CIFAR-100-C at one
   severity), the pairs and the α values; every (pair, α) gets a content id (:func:`hfsoup.study.store.row_id` of
   the two weight hashes, α and the data fingerprints). All input errors surface here, before any file is
   written.
2. **Share**: the ids already in the study folder's shards are skipped; the others are split across processes by
   id (:func:`~hfsoup.study.store.shard_of`) — Accelerate's processes when launched with ``accelerate launch``
   (``PartialState``), and ``--shard i/n`` across independent jobs (both combine).
3. **Per model** (O(N), cached on disk and shared by the processes): test logits and features, accuracy and loss,
   and the corrupted scores (:class:`~hfsoup.study.engine.PairEngine`).
4. **Per row**: the soup on the device, its scores and the pair's similarity, appended atomically to this
   process's shard file (:class:`~hfsoup.study.store.ShardWriter`) as soon as it is done.
5. **Merge** (the main process, after every process is done): ``pairs.parquet`` and ``models.parquet``
   (:func:`hfsoup.study.table.merge_study`).

A run killed at any moment and rerun gives the same table as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from hfsoup.errors import DatasetError, HfSoupError
from hfsoup.study import store
from hfsoup.study.inputs import ModelSelection, Pair, StudyInputError, plan_pairs, read_pairs_file, resolve_models
from hfsoup.study.table import PAIR_COLUMNS, PLAN_FILE, STUDY_FILE, merge_study, read_study_json

__all__ = ["StudyConfig", "StudyPlan", "PlannedRow", "StudyRunResult", "Distribution", "plan_study", "run_study",
           "distribution", "STUDY_FORMAT"]

STUDY_FORMAT = 1
#: Settings that decide what a row's numbers mean: a rerun in the same folder must keep them.
IDENTITY_SETTINGS = ("test_fingerprint", "corrupted_fingerprint", "integer_policy", "precision")


@dataclass
class StudyConfig:
    """Everything ``hfsoup study run`` takes (the CLI fills it from its options)."""

    sources: list[str]
    out: Path
    dataset: str = "uoft-cs/cifar100"
    dataset_revision: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    limit: int | None = None
    corrupted_dataset: str | None = None
    corrupted_revision: str | None = None
    corruptions: str = "all"
    severity: int = 3
    alphas: Sequence[float] = (0.5,)
    kinds: str | None = None
    epochs: str | None = None
    variants: str | None = None
    pairs_file: Path | None = None
    integer_policy: str = "mean"
    batch_size: int = 500
    device: str | None = None
    shard: tuple[int, int] | None = None
    retry_failed: bool = False
    merge: bool = True
    cache_dir: Path | None = None
    compile: bool = False
    precision: str = "auto"  # fp32 | bf16 | auto (hfsoup.eval.precision)
    allow_pickle: bool = False
    token: str | None = None
    progress: bool = True


@dataclass(frozen=True)
class PlannedRow:
    """One row to compute: its content id, the pair and α."""

    row_id: str
    pair: Pair
    alpha: float


@dataclass
class StudyPlan:
    """The resolved study: models, data, pairs, α values, row ids and the settings recorded in ``study.json``."""

    selection: ModelSelection
    pairs: list[Pair]
    alphas: list[float]
    rows: list[PlannedRow]
    test: object  # ImageData
    corrupted: dict  # corruption name -> ImageData
    settings: dict

    @property
    def models(self):
        return self.selection.models


@dataclass
class Distribution:
    """Which share of the rows this process computes: shard ``index`` of ``count``."""

    index: int = 0
    count: int = 1
    rank: int = 0
    world: int = 1
    device: object = None
    launched: bool = False
    _barrier: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        """The process that writes ``study.json`` and merges (rank 0 of each job)."""
        return self.rank == 0

    def wait_for_everyone(self) -> None:
        if self._barrier is not None:
            self._barrier()

    @property
    def shard_name(self) -> str:
        return f"part-{self.index:05d}-of-{self.count:05d}"


@dataclass
class StudyRunResult:
    """What a run did."""

    out: Path
    total_rows: int
    done_before: int
    assigned: int
    computed: int
    failed: int
    seconds: float
    shard: tuple[int, int]
    merged: bool
    pairs_path: Path | None = None
    models_path: Path | None = None
    cache_hits: int = 0
    cache_misses: int = 0
    table_rows: int | None = None
    table_failed: int | None = None

    @property
    def rows_per_second(self) -> float | None:
        return self.computed / self.seconds if self.computed and self.seconds > 0 else None

    def to_dict(self) -> dict:
        return {"out": str(self.out), "total_rows": self.total_rows, "done_before": self.done_before,
                "assigned": self.assigned, "computed": self.computed, "failed": self.failed,
                "seconds": self.seconds, "rows_per_second": self.rows_per_second, "shard": list(self.shard),
                "merged": self.merged, "pairs": str(self.pairs_path) if self.pairs_path else None,
                "models": str(self.models_path) if self.models_path else None,
                "table_rows": self.table_rows, "table_failed": self.table_failed,
                "cache": {"hits": self.cache_hits, "misses": self.cache_misses}}


# ------------------------------------------------------------------------------------------------------ plan
def _fingerprint_of(parts: Sequence[tuple]) -> str:
    return hashlib.sha256(json.dumps([list(p) for p in parts], separators=(",", ":")).encode()).hexdigest()


def _check_alphas(alphas: Sequence[float]) -> list[float]:
    from hfsoup.recipes.mix import parse_alphas

    values = parse_alphas(list(alphas))
    seen: dict[str, float] = {}
    out = []
    for a in values:
        key = repr(round(a, 6) + 0.0)
        if key in seen:
            continue  # the same soup (α is compared to 6 decimals, as in the row id)
        seen[key] = a
        out.append(a)
    return out


def _load_test(config: StudyConfig):
    from hfsoup.data.images import load_image_data

    return load_image_data(config.dataset, "test", revision=config.dataset_revision,
                           image_column=config.image_column, label_column=config.label_column, limit=config.limit,
                           progress=config.progress)


def _test_split_size(config: StudyConfig, test) -> int:
    """Rows of the whole test split (``test`` may be its first ``--limit`` rows): the report says what one image
    is worth on the split, not only on the evaluated part."""
    if config.limit is None or len(test) < config.limit:
        return len(test)
    from hfsoup.data.images import load_split

    return len(load_split(config.dataset, "test", revision=config.dataset_revision)[0])


def _load_corrupted(config: StudyConfig) -> dict:
    from hfsoup.data.cifar100c import iter_corrupted, parse_corruptions

    if not config.corrupted_dataset:
        return {}
    if not isinstance(config.severity, int) or not 1 <= config.severity <= 5:
        raise DatasetError(f"--severity takes one level in 1-5, got {config.severity!r}")
    parse_corruptions(config.corruptions)
    return {c: data for c, _, data in iter_corrupted(config.corrupted_dataset, config.corruptions, config.severity,
                                                     revision=config.corrupted_revision, limit=config.limit,
                                                     progress=config.progress)}


def plan_study(config: StudyConfig, *, precision: str = "fp32") -> StudyPlan:
    """Resolve models, data, pairs and α values into the rows of the study; writes nothing.

    Raises :class:`~hfsoup.errors.HfSoupError` subclasses with one-line messages for every input problem: fewer
    than two models, incompatible models, an unknown model in the pairs file, a dataset without a test split,
    labels beyond the models' classes, settings that differ from an earlier run in the same folder.
    """
    from hfsoup.core.averaging import INTEGER_POLICIES

    if config.integer_policy not in INTEGER_POLICIES:
        raise StudyInputError(f"unknown --integer-policy '{config.integer_policy}': choose one of "
                              f"{', '.join(INTEGER_POLICIES)}")
    if config.batch_size < 1:
        raise StudyInputError(f"--batch-size must be positive, got {config.batch_size}")
    alphas = _check_alphas(config.alphas)
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise StudyInputError(f"--out '{out}' is a file: pass a folder")
    previous = read_study_json(out) if (out / STUDY_FILE).is_file() else None
    selection = resolve_models(config.sources, kinds=config.kinds, epochs=config.epochs, variants=config.variants,
                               allow_pickle=config.allow_pickle, token=config.token)
    models = selection.models
    pairs = read_pairs_file(config.pairs_file, models) if config.pairs_file else None
    pairs = plan_pairs(models, pairs)
    test = _load_test(config)
    num_classes = models[0].ingredient.num_classes
    # Labels outside the models' classes (-100, negative, too large): an error naming the column and the value,
    # before any soup (the engine's cross-entropy would skip -100 silently).
    test.check_labels(num_classes)
    corrupted = _load_corrupted(config)
    for data in corrupted.values():
        data.check_labels(num_classes)
    corrupted_fp = (_fingerprint_of([(c, config.severity, d.fingerprint) for c, d in corrupted.items()])
                    if corrupted else None)
    fingerprints = [test.fingerprint] + ([corrupted_fp] if corrupted_fp else [])
    # Non-default settings change the soups' numbers: they enter the ids (the defaults keep the plain ids).
    extra = ([f"integer_policy={config.integer_policy}"] if config.integer_policy != "mean" else []) + (
        [f"precision={precision}"] if precision != "fp32" else [])
    rows = []
    for pair in pairs:
        a, b = models[pair.a], models[pair.b]
        for alpha in alphas:
            rows.append(PlannedRow(store.row_id(a.sha, b.sha, alpha, fingerprints + extra), pair, alpha))
    settings = {
        "dataset": config.dataset, "dataset_revision": config.dataset_revision, "split": "test",
        "num_samples": len(test), "limit": config.limit, "test_fingerprint": test.fingerprint,
        "split_size": _test_split_size(config, test),
        "num_classes": num_classes, "class_names": test.class_names,
        "corrupted_dataset": config.corrupted_dataset if corrupted else None,
        "corrupted_revision": config.corrupted_revision if corrupted else None,
        "corruptions": list(corrupted), "severity": config.severity if corrupted else None,
        "corrupted_fingerprint": corrupted_fp, "integer_policy": config.integer_policy, "precision": precision,
        "architecture": models[0].ingredient.architecture,
    }
    if previous is not None:
        old = previous.get("settings") or {}
        for key in IDENTITY_SETTINGS:
            if key in old and old[key] != settings[key]:
                raise StudyInputError(f"'{out}' holds a study run with another {key} ({_short(old[key])} vs "
                                      f"{_short(settings[key])} now): its rows would not be comparable; use another "
                                      f"--out")
    return StudyPlan(selection, pairs, alphas, rows, test, corrupted, settings)


def _short(value) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) > 16 else text


# --------------------------------------------------------------------------------------------- distribution
def distribution(shard: tuple[int, int] | None = None, device: str | None = None) -> Distribution:
    """This process's share: Accelerate's process index and count when launched by ``accelerate launch`` (or
    ``torchrun``), combined with ``--shard i/n`` (shard ``i * world + rank`` of ``n * world``)."""
    import torch

    shard_i, shard_n = shard or (0, 1)
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    rank, world, barrier, dev = 0, 1, None, None
    if launched:
        from accelerate import PartialState

        # Without GPUs, Accelerate starts one process group only when told to use the CPU (SPEC §7).
        cpu = (os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
               or not torch.cuda.is_available())
        state = PartialState(cpu=cpu)
        rank, world, barrier, dev = state.process_index, state.num_processes, state.wait_for_everyone, state.device
        if world != int(os.environ["WORLD_SIZE"]):
            raise HfSoupError(f"launched as {os.environ['WORLD_SIZE']} processes but Accelerate sees {world}: on a "
                              f"machine without GPUs set ACCELERATE_USE_CPU=1 (with --multi_gpu)")
        if dev is not None and dev.type == "cpu":
            dev = torch.device("cpu")
    if device is not None:
        dev = torch.device(device)
    if dev is None:
        from hfsoup.eval.metrics import default_device

        dev = default_device()
        if dev.type == "mps":  # float64 accumulation is not available on MPS
            dev = torch.device("cpu")
    return Distribution(index=shard_i * world + rank, count=shard_n * world, rank=rank, world=world,
                        device=torch.device(dev), launched=launched, _barrier=barrier)


# -------------------------------------------------------------------------------------------------------- rows
def _row(planned: PlannedRow, plan: StudyPlan, outs: dict, sim, scores) -> dict:
    from hfsoup.core.results import EvalResult, soup_gain

    a, b = plan.models[planned.pair.a], plan.models[planned.pair.b]
    oa, ob = outs[planned.pair.a], outs[planned.pair.b]
    epochs = (a.epoch, b.epoch)
    row = {
        "row_id": planned.row_id, "status": "ok", "error": None,
        "model_a": a.name, "model_b": b.name, "repo_a": a.repo, "repo_b": b.repo, "commit_a": a.commit,
        "commit_b": b.commit, "sha_a": a.sha, "sha_b": b.sha, "epoch_a": a.epoch, "epoch_b": b.epoch,
        "variant_a": a.variant, "variant_b": b.variant, "kind_a": a.kind, "kind_b": b.kind,
        "shared_epochs": None if None in epochs else min(epochs), "alpha": float(planned.alpha),
        "acc_a": oa.accuracy, "loss_a": oa.loss, "acc_b": ob.accuracy, "loss_b": ob.loss,
        "soup_acc": None, "soup_loss": None, "acc_gain": None, "loss_gain": None, "collapsed": None,
        **sim.to_dict(),
        "c_acc_a": oa.c_accuracy, "c_loss_a": oa.c_loss, "c_acc_b": ob.c_accuracy, "c_loss_b": ob.c_loss,
        "c_soup_acc": None, "c_soup_loss": None, "c_acc_gain": None, "c_loss_gain": None,
        "c_severity": plan.settings["severity"], "test_fingerprint": plan.settings["test_fingerprint"],
        "corrupted_fingerprint": plan.settings["corrupted_fingerprint"],
    }
    if not scores.finite:
        row.update(status="failed", error="non-finite soup: the averaged weights hold NaN/Inf (check the "
                                          "ingredients' weights)")
    else:
        n = len(plan.test)
        gain = soup_gain(EvalResult(scores.accuracy, scores.loss, n),
                         [EvalResult(oa.accuracy, oa.loss, n), EvalResult(ob.accuracy, ob.loss, n)])
        row.update(soup_acc=scores.accuracy, soup_loss=scores.loss, acc_gain=gain["accuracy_gain"],
                   loss_gain=gain["loss_gain"], collapsed=bool(gain["collapsed"]))
        if scores.corrupted:
            c_gain = soup_gain(EvalResult(scores.c_accuracy, scores.c_loss, n),
                               [EvalResult(oa.c_accuracy, oa.c_loss, n), EvalResult(ob.c_accuracy, ob.c_loss, n)])
            row.update(c_soup_acc=scores.c_accuracy, c_soup_loss=scores.c_loss,
                       c_acc_gain=c_gain["accuracy_gain"], c_loss_gain=c_gain["loss_gain"])
    row["finished_at"] = time.time()
    assert list(row) == list(PAIR_COLUMNS), "row columns drifted from PAIR_COLUMNS"
    return row


def _model_rows(plan: StudyPlan, outs: dict) -> list[dict]:
    return [{**m.to_dict(), "acc": outs[i].accuracy, "loss": outs[i].loss, "c_acc": outs[i].c_accuracy,
             "c_loss": outs[i].c_loss} for i, m in enumerate(plan.models)]


def _write_study_json(out: Path, plan: StudyPlan, model_rows: list[dict]) -> None:
    from hfsoup import __version__
    from hfsoup.core.files import atomic_write_json, atomic_write_text

    previous = read_study_json(out) if (out / STUDY_FILE).is_file() else {}
    models = {m["sha"]: m for m in previous.get("models") or [] if isinstance(m, dict) and m.get("sha")}
    models.update({m["sha"]: m for m in model_rows})  # this run's view of a model wins
    doc = {
        "format": STUDY_FORMAT, "hfsoup_version": __version__, "settings": plan.settings,
        "source": plan.selection.source, "source_kind": plan.selection.source_kind,
        "alphas": plan.alphas, "num_models": len(plan.models), "num_pairs": len(plan.pairs),
        "num_rows": len(plan.rows),
        "models": sorted(models.values(), key=lambda m: (m.get("name") or "", m["sha"])),
    }
    atomic_write_json(out / STUDY_FILE, doc)
    atomic_write_text(out / PLAN_FILE, "".join(f"{r.row_id}\n" for r in sorted(plan.rows, key=lambda r: r.row_id)))


# --------------------------------------------------------------------------------------------------------- run
def _recorded_precision(out: Path):
    """The :class:`~hfsoup.eval.precision.PrecisionChoice` an earlier run recorded in ``out/study.json`` (None: no
    run there yet, or a record without a precision)."""
    from hfsoup.eval.precision import PrecisionChoice

    if not (out / STUDY_FILE).is_file():
        return None
    settings = (read_study_json(out) or {}).get("settings") or {}
    name = settings.get("precision")
    if not isinstance(name, str) or name.split("+")[0] not in ("fp32", "bf16"):
        return None
    doc = settings.get("precision_choice")
    if isinstance(doc, dict) and doc.get("precision") == name.split("+")[0]:
        return PrecisionChoice.from_dict(doc)
    return PrecisionChoice("auto", name.split("+")[0], "recorded")


def _plan_with_precision(config: StudyConfig, device):
    """The plan and the evaluation precision (a :class:`~hfsoup.eval.precision.PrecisionChoice`, recorded in the
    settings as ``precision_choice``).

    ``auto`` in a folder that already holds a run (a resumed run, a later ``--shard``) keeps the precision recorded
    there, without a new check: its rows' ids and numbers depend on it. Otherwise ``auto`` plans with the device's
    native precision; where that is bf16, a check of the plan's first model (the same for every shard and process)
    on the first test images decides, and a failed check re-plans in fp32 (the precision is part of the row ids
    and cache keys)."""
    from hfsoup.eval.metrics import choose_eval_precision
    from hfsoup.eval.precision import PrecisionChoice
    from hfsoup.study.engine import precision_name

    recorded = _recorded_precision(Path(config.out)) if config.precision == "auto" else None
    if recorded is not None:
        plan = plan_study(config, precision=precision_name(device, config.compile, recorded.precision))
        reason = recorded.reason if recorded.reason.startswith("kept from") else \
            f"kept from the run already in this folder ({recorded.requested}: {recorded.reason})"
        choice = PrecisionChoice("auto", recorded.precision, reason, recorded.check)
        plan.settings["precision_choice"] = choice.to_dict()
        return plan, choice
    name = precision_name(device, config.compile, config.precision)
    plan = plan_study(config, precision=name)
    resolved = name.split("+")[0]
    if resolved == "fp32":
        reason = "requested" if config.precision == "fp32" else f"no native bf16 on this {device.type}"
        choice = PrecisionChoice(config.precision, "fp32", reason)
    else:
        model = plan.models[0].ingredient.create_model()
        choice = choose_eval_precision(config.precision, model, plan.test, device=device,
                                       batch_size=config.batch_size)
        del model
        if choice.precision != resolved:  # auto, and the check failed: fp32 ids and cache keys
            plan = plan_study(config, precision=precision_name(device, config.compile, "fp32"))
    plan.settings["precision_choice"] = choice.to_dict()
    return plan, choice


def run_study(config: StudyConfig) -> StudyRunResult:
    """Plan, compute this process's share of the missing rows, and (main process, single job) merge the tables.

    Returns a :class:`StudyRunResult`. Raises :class:`~hfsoup.errors.HfSoupError` on bad input, before anything is
    written.
    """
    import torch
    from tqdm.auto import tqdm

    from hfsoup.study.cache import ModelCache
    from hfsoup.study.engine import EvalSet, PairEngine

    dist = distribution(config.shard, config.device)
    plan, choice = _plan_with_precision(config, dist.device)
    out = Path(config.out)
    done = store.completed_ids(out, include_failed=not config.retry_failed) if out.is_dir() else set()
    todo = [r for r in plan.rows if r.row_id not in done and store.shard_of(r.row_id, dist.count) == dist.index]
    done_before = sum(1 for r in plan.rows if r.row_id in done)

    device = dist.device
    test = EvalSet.from_image_data(plan.test, "test", device)
    corrupted = {c: EvalSet.from_image_data(d, c, device) for c, d in plan.corrupted.items()}
    cache = ModelCache(config.cache_dir)
    engine = PairEngine([m.ingredient for m in plan.models], test, corrupted, device=device,
                        batch_size=config.batch_size, integer_policy=config.integer_policy, cache=cache,
                        progress=config.progress and dist.is_main, compile=config.compile,
                        precision=choice.precision)
    # Per model, once: the processes share the forward passes through the disk cache. Every process must see the
    # same list of missing models: nobody writes to the cache between the two barriers.
    dist.wait_for_everyone()
    missing = [i for i in range(len(plan.models)) if not engine.cached(i)]
    dist.wait_for_everyone()
    mine = [i for k, i in enumerate(missing) if k % dist.world == dist.rank]
    for i in tqdm(mine, desc="models", unit="model", disable=not (config.progress and dist.is_main), leave=False):
        engine.model_outputs(i)
    dist.wait_for_everyone()
    outs = {i: engine.model_outputs(i) for i in range(len(plan.models))}
    out.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        _write_study_json(out, plan, _model_rows(plan, outs))

    computed = failed = 0
    loop_start = time.perf_counter()
    order = {pair: k for k, pair in enumerate(plan.pairs)}
    todo.sort(key=lambda r: (order[r.pair], r.alpha))
    with store.ShardWriter(out, dist.shard_name) as writer:
        bar = tqdm(total=len(todo), desc=f"study {dist.index}/{dist.count}" if dist.count > 1 else "study",
                   unit="soup", disable=not (config.progress and dist.is_main), smoothing=0.1)
        sim_pair, sim = None, None
        for planned in todo:
            if planned.pair != sim_pair:  # rows of a pair are consecutive: its similarity is computed once
                sim_pair, sim = planned.pair, engine.similarity(planned.pair.a, planned.pair.b)
            scores = engine.soup(planned.pair.a, planned.pair.b, planned.alpha)
            row = _row(planned, plan, outs, sim, scores)
            writer.append(row)
            computed += 1
            failed += row["status"] == "failed"
            bar.update(1)
        bar.close()
    seconds = time.perf_counter() - loop_start
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dist.wait_for_everyone()
    merged = None
    if dist.is_main and config.merge and (config.shard or (0, 1))[1] == 1:
        merged = merge_study(out)
    result = StudyRunResult(out=out, total_rows=len(plan.rows), done_before=done_before, assigned=len(todo),
                            computed=computed, failed=failed, seconds=seconds, shard=(dist.index, dist.count),
                            merged=merged is not None, cache_hits=cache.hits, cache_misses=cache.misses)
    if merged is not None:
        result.pairs_path, result.models_path = merged.pairs_path, merged.models_path
        result.table_rows, result.table_failed = merged.rows, merged.failed
    return result

