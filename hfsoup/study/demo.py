"""``hfsoup demo``: the pair study of the paper, run and reported offline on the embedded mini-zoo in about two
minutes.

The mini-zoo (``hfsoup/assets/mini_zoo``) was trained by hfsoup's own zoo pipeline (:mod:`hfsoup.train`,
:mod:`hfsoup.zoo.build`) on 160 training images of scikit-learn's handwritten digits (``sklearn:digits``): a
``resnet10_cifar_nano`` trunk with 4 variants (paper Table 2 scales) branched at 6 epochs, 24 models. So few
training images keep the best model below the ceiling of digits, leaving soups room to gain. The demo runs
``hfsoup study run`` (:func:`hfsoup.study.run.run_study`: every pair's midpoint soup, its gain and the pair's
similarity) and ``hfsoup study report`` (:func:`hfsoup.study.report.write_report`) on it, prints the headline
numbers, and compares the uniform, greedy and RADIN soups of the whole zoo with its best model.
``hfsoup demo --rebuild`` retrains the mini-zoo from scratch with the same code. The result is bit for bit the
committed mini-zoo only under the same conditions: the same torch version, the same CPU instruction set (the
kernels torch picks, ``torch.backends.cpu.get_cpu_capability()``) and one training thread. The rebuild records them
in ``build.json`` beside the weights and says, in one line, when this machine's differ from the committed zoo's.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from hfsoup.core.files import atomic_folder, check_output

MINI_ZOO_YAML = """\
# The embedded mini-zoo: the paper's recipe shrunk to 160 training images of scikit-learn's digits and a
# 84k-parameter ResNet, so that the best model stays below the ceiling and soups have room to gain.
data:
  dataset: "sklearn:digits"
  image_column: img
  label_column: fine_label
  num_classes: 10
  limit: 160
augment: {random_crop: true, padding: 4, hflip: false}
optim: {lr: 0.05, momentum: 0.9, weight_decay: 0.0005, nesterov: true, t_max: 52, eta_min: 0.0}
train:
  architecture: resnet10_cifar_nano
  epochs: 40
  batch_size: 16
  seed: 42
  checkpoint_interval: 4
  eval_batch_size: 500
branches:
  epochs: [4, 8, 16, 24, 32, 40]
  max_epochs: 12
  patience: 4
"""


#: The demo evaluates in fp32 on the CPU on every machine: its numbers are the documented ones, and not bf16 where
#: a CPU happens to have native bf16 (AMX, AVX-512 BF16), which ``--precision auto`` would pick after its check.
DEMO_PRECISION = "fp32"


def asset_dir() -> Path:
    """The embedded mini-zoo (``hfsoup/assets/mini_zoo``)."""
    return Path(str(resources.files("hfsoup").joinpath("assets", "mini_zoo")))


# -- rebuilding --------------------------------------------------------------------------------------------------
#: The record of the conditions a mini-zoo was built under, beside its weights.
BUILD_FILE = "build.json"
#: The conditions a bit-for-bit rebuild needs to share with the committed mini-zoo: the torch version, the CPU
#: instruction set its kernels use, the CPU architecture, and the number of training threads (a reduction split
#: over threads sums in another order). The other recorded fields (OS, Python) are for information.
REPRODUCIBILITY_KEYS = ("torch", "cpu_capability", "machine", "threads")


def build_conditions(threads: int | None = 1) -> dict:
    """This machine's conditions for a (re)build with ``threads`` torch threads (None: torch's current count)."""
    import torch

    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "system": platform.system(), "platform": platform.platform(),
            "python": platform.python_version(), "threads": int(threads or torch.get_num_threads())}


def read_build_record(zoo: str | Path) -> dict | None:
    """The ``build.json`` of a zoo folder (None when it has none, or an unreadable one)."""
    path = Path(zoo) / BUILD_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def conditions_note(recorded: dict | None, current: dict) -> str | None:
    """One line saying why a rebuild under ``current`` conditions may not reproduce the zoo built under
    ``recorded`` ones (None when every :data:`REPRODUCIBILITY_KEYS` condition matches)."""
    if not recorded:
        return ("note: the committed mini-zoo records no build conditions (build.json), so this rebuild may not "
                "reproduce its weights bit for bit")
    diff = [f"{k} {recorded.get(k)} there, {current.get(k)} here" for k in REPRODUCIBILITY_KEYS
            if recorded.get(k) != current.get(k)]
    if not diff:
        return None
    return (f"note: the committed mini-zoo was built under other conditions ({'; '.join(diff)}): the rebuilt "
            f"weights will differ from it (bit for bit needs the same torch version, CPU capability, architecture "
            f"and thread count), and the demo's numbers may differ from the documented ones")


def compare_weights(a: str | Path, b: str | Path) -> tuple[int, int]:
    """(models whose tensors are identical, models compared) between two packaged zoos, folder by folder."""
    from safetensors.torch import load_file

    a, b = Path(a), Path(b)
    same = total = 0
    for fa in sorted(a.glob("*/*/model.safetensors")):
        fb = b / fa.relative_to(a)
        if not fb.is_file():
            continue
        total += 1
        ta, tb = load_file(str(fa)), load_file(str(fb))
        same += ta.keys() == tb.keys() and all(ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape
                                               and bool((ta[k] == tb[k]).all()) for k in ta)
    return same, total


def package_zoo(work: Path, dest: Path, cfg, conditions: dict | None = None) -> dict:
    """Copy the trunk checkpoints at branch epochs and every branch of ``work`` to ``dest``, weights as float16;
    ``conditions`` (:func:`build_conditions`) are recorded in ``dest/build.json``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from hfsoup.zoo.layout import branch_dir, trunk_dir

    folders = [(trunk_dir(work, e), Path("trunk") / f"e{e:03d}") for e in cfg.branches.epochs]
    folders += [(branch_dir(work, e, k), Path("branches") / branch_dir(work, e, k).name)
                for e in cfg.branches.epochs for k in sorted(cfg.branches.variants)]
    with atomic_folder(dest, force=True) as tmp:
        (tmp / "zoo.yaml").write_text(MINI_ZOO_YAML, encoding="utf-8")
        for src, rel in folders:
            dst = tmp / rel
            dst.mkdir(parents=True)
            with safe_open(str(src / "model.safetensors"), "pt") as f:
                meta = dict(f.metadata() or {})
                tensors = {k: (t.half() if t.is_floating_point() else t) for k in f.keys()
                           for t in [f.get_tensor(k)]}
            meta["stored_dtype"] = "float16"
            save_file(tensors, str(dst / "model.safetensors"), metadata=meta)
            for name in ("config.json", "README.md"):
                shutil.copy2(src / name, dst / name)
        logs = {p.stem: [json.loads(line) for line in p.read_text().splitlines()]
                for p in (work / "logs").glob("*.jsonl")}
        (tmp / "training_logs.json").write_text(json.dumps(logs, separators=(",", ":")), encoding="utf-8")
        if conditions is not None:
            record = {"conditions": conditions, "reproducibility_keys": list(REPRODUCIBILITY_KEYS),
                      "models": len(folders)}
            (tmp / BUILD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {"models": len(folders), "dest": str(dest)}


def rebuild(work: str | Path, dest: str | Path | None = None, *, threads: int | None = 1, progress: bool = True,
            fresh: bool = True, log=None) -> dict:
    """Train the mini-zoo in ``work`` with :func:`hfsoup.zoo.build.build` and package it into ``dest`` (with its
    ``build.json``). Before training, ``log`` (default: stderr) gets one line when this machine's conditions differ
    from those recorded by the committed mini-zoo (:func:`conditions_note`); after, one line saying how many
    models came out identical to the committed ones. The result holds both (``note``, ``identical``)."""
    import torch

    from hfsoup.zoo.build import build
    from hfsoup.zoo.config import config_from_dict

    import yaml

    log = log or (lambda text: print(text, file=sys.stderr))
    if threads:
        torch.set_num_threads(threads)
    conditions = build_conditions(threads)
    committed = asset_dir()
    recorded = (read_build_record(committed) or {}).get("conditions")
    note = conditions_note(recorded, conditions)
    if note:
        log(note)
    work = Path(work)
    if fresh and work.exists():
        shutil.rmtree(work)
    cfg = config_from_dict(yaml.safe_load(MINI_ZOO_YAML))
    t0 = time.time()
    build(cfg, work, cpu=True, progress=progress)
    seconds = time.time() - t0
    dest = Path(dest) if dest else committed
    res = package_zoo(work, dest, cfg, conditions=conditions)
    res.update(train_seconds=seconds, conditions=conditions, note=note, identical=None)
    if dest.resolve() != committed.resolve():  # (rebuilding into the package replaces what it compares with)
        same, total = compare_weights(dest, committed)
        res["identical"] = [same, total]
        log(f"rebuilt mini-zoo: {same} of {total} models bit for bit identical to the committed one (as packaged, "
            f"float16)" + ("" if same == total else f"; the conditions of each build are in {BUILD_FILE}"))
    return res


# -- the demo ------------------------------------------------------------------------------------------------
#: Test images the demo evaluates on: the first 200 of digits' 360 keep the 276 soups near two minutes on 2 cores
#: (the whole split takes about 2 min 40 s); None: all.
DEMO_LIMIT: int | None = 200
#: Bootstrap resamples of the report's AUROC intervals: enough for the demo's printout, quick on 2 cores.
DEMO_N_BOOT = 200
DEMO_FILES = ("demo.json", "demo.txt", "report", "study")


def load_zoo_members(zoo: Path) -> list[dict]:
    """Branch folders of a zoo with their decoded metadata, ordered by (branch epoch, variant)."""
    from hfsoup.hub.format import decode_metadata
    from hfsoup.core.ingredients import load_ingredient

    members = []
    for folder in sorted((zoo / "branches").iterdir()):
        if not (folder / "model.safetensors").is_file():
            continue
        ing = load_ingredient(str(folder))
        meta = decode_metadata(ing.metadata)
        members.append({"name": folder.name, "path": str(folder), "ingredient": ing,
                        "branch_epoch": int(meta["branch_epoch"]), "variant": int(meta["variant"]), "meta": meta})
    return sorted(members, key=lambda m: (m["branch_epoch"], m["variant"]))


def select_pairs(members: list[dict], max_pairs: int | None = None) -> list[tuple[int, int]]:
    """Every pair of members (indices, in order), or at most ``max_pairs`` of them for a quick run: then one pair
    of each shared-epoch bin in turn, so that every bin is represented."""
    import itertools

    pairs = list(itertools.combinations(range(len(members)), 2))
    if max_pairs is None or max_pairs >= len(pairs):
        return pairs
    by_bin: dict[int, list[tuple[int, int]]] = {}
    for i, j in pairs:
        by_bin.setdefault(min(members[i]["branch_epoch"], members[j]["branch_epoch"]), []).append((i, j))
    spread = [p for turn in itertools.zip_longest(*by_bin.values()) for p in turn if p is not None]
    return sorted(spread[:max(0, max_pairs)])


@dataclass
class DemoResult:
    """What :func:`run_demo` wrote and printed.

    ``out/study`` is the study folder of ``hfsoup study run`` (pairs.parquet, models.parquet, study.json),
    ``out/report`` the report of ``hfsoup study report`` (report.md, report.html, summary.json, figures/),
    ``out/demo.json`` :meth:`to_dict` and ``out/demo.txt`` the printed text."""

    out: Path
    zoo: str
    dataset: str
    test: dict  # the test split's describe() (num_samples, fingerprint, ...) and the limit
    models: list[dict]  # name, branch_epoch, variant, acc, loss (from models.parquet)
    bins: list[dict]  # by shared epochs: pairs, mean gain, P(gain > 0) with its interval, collapse rate
    headline: list[dict]  # the report's headline (finding, value, ours, paper)
    recipes: list[dict]  # recipe, models, test_accuracy, test_loss, gain_vs_best, note
    study: dict = field(default_factory=dict)  # StudyRunResult.to_dict()
    seconds: float = 0.0
    text: str = ""

    def to_dict(self) -> dict:
        return {"zoo": self.zoo, "dataset": self.dataset, "test": self.test, "models": self.models,
                "bins": self.bins, "headline": self.headline, "recipes": self.recipes, "study": self.study,
                "seconds": self.seconds}


def run_demo(out: str | Path, *, zoo: str | Path | None = None, force: bool = False, progress: bool = True,
             max_pairs: int | None = None, recipes: bool = True, limit: int | None = DEMO_LIMIT,
             n_boot: int = DEMO_N_BOOT, log=print) -> DemoResult:
    """Run the pair study and its report on the mini-zoo, compare the recipes with the best model, print the
    story; everything is written atomically to ``out``.

    Args:
        out: output folder (must not exist unless ``force``).
        zoo: a zoo folder with ``branches/`` and ``zoo.yaml`` (default: the embedded mini-zoo).
        max_pairs: a quick run on at most this many pairs (:func:`select_pairs`: spread over the shared-epoch
            bins); only the models of those pairs take part (study and recipes). None: every pair.
        recipes: also compare the uniform, greedy and RADIN soups with the best model.
        limit: evaluate on the first ``limit`` test images only (None: all).
        n_boot: bootstrap resamples of the report's intervals.
        log: where the text goes (``print``).
    """
    from hfsoup.data.images import load_image_data
    from hfsoup.errors import HfSoupError, InvalidParameterError
    from hfsoup.study.report import write_report
    from hfsoup.study.run import StudyConfig, run_study
    from hfsoup.zoo.config import load_config

    t_start = time.time()
    if max_pairs is not None and max_pairs < 1:
        raise InvalidParameterError(f"max_pairs must be >= 1 (or None: every pair), got {max_pairs}",
                                    parameter="max_pairs")
    if limit is not None and limit < 1:
        raise InvalidParameterError(f"limit must be >= 1 test images (or None: all), got {limit}", parameter="limit")
    out = check_output(out, force)
    zoo = Path(zoo) if zoo else asset_dir()
    if not (zoo / "branches").is_dir() or not (zoo / "zoo.yaml").is_file():
        raise HfSoupError(f"no zoo at '{zoo}' (expected zoo.yaml and branches/bNNN-vK folders): run "
                          f"`hfsoup demo --rebuild`", path=zoo)
    cfg = load_config(zoo / "zoo.yaml")
    members = load_zoo_members(zoo)
    pairs = select_pairs(members, max_pairs)
    with atomic_folder(out, force=force) as tmp, tempfile.TemporaryDirectory(prefix="hfsoup-demo-") as scratch:
        sources, pairs_file = [str(zoo)], None
        if max_pairs is not None:  # a quick run: only the models of the selected pairs, and only those pairs
            used = sorted({k for pair in pairs for k in pair})
            sources = [members[k]["path"] for k in used]
            pairs_file = Path(scratch) / "pairs.txt"
            pairs_file.write_text("".join(f"{members[i]['path']} {members[j]['path']}\n" for i, j in pairs),
                                  encoding="utf-8")
            members = [members[k] for k in used]
        # The model cache lives in a scratch folder: the demo measures (and leaves) nothing in the user's cache.
        run = run_study(StudyConfig(sources=sources, out=tmp / "study", dataset=cfg.data.dataset,
                                    image_column=cfg.data.image_column, label_column=cfg.data.label_column,
                                    limit=limit, pairs_file=pairs_file, device="cpu", precision=DEMO_PRECISION,
                                    cache_dir=Path(scratch) / "cache", progress=progress))
        report = write_report(tmp / "study", tmp / "report", svg=False, n_boot=n_boot)
        import pyarrow.parquet as pq

        by_name = {m["name"]: m for m in members}
        models = [{"name": r["name"], "branch_epoch": by_name[r["name"]]["branch_epoch"],
                   "variant": by_name[r["name"]]["variant"], "path": by_name[r["name"]]["path"],
                   "acc": r["acc"], "loss": r["loss"]}
                  for r in pq.read_table(tmp / "study" / "models.parquet").to_pylist()]
        models.sort(key=lambda m: (m["branch_epoch"], m["variant"]))
        best = max(models, key=lambda m: m["acc"])
        recipe_rows = [{"recipe": "best ingredient", "models": 1, "test_accuracy": best["acc"],
                        "test_loss": best["loss"], "note": best["name"]}]
        full = load_image_data(cfg.data.dataset, cfg.data.test_split, image_column=cfg.data.image_column,
                               label_column=cfg.data.label_column, progress=False)
        test = load_image_data(cfg.data.dataset, cfg.data.test_split, image_column=cfg.data.image_column,
                               label_column=cfg.data.label_column, limit=limit, progress=False)
        if recipes:
            val = load_image_data(cfg.data.dataset, cfg.data.val_split, image_column=cfg.data.image_column,
                                  label_column=cfg.data.label_column, progress=False)
            from hfsoup.eval.precision import use_precision

            with use_precision(DEMO_PRECISION):  # greedy's and RADIN's own evaluations too
                recipe_rows += recipe_results([by_name[m["name"]] for m in models], test, val)
        for r in recipe_rows:
            r["gain_vs_best"] = r["test_accuracy"] - best["acc"]
        result = DemoResult(out=out, zoo=str(zoo), dataset=cfg.data.dataset, test={**test.describe(), "limit": limit,
                                                                   "split_size": len(full)},
                            models=models, bins=shared_epoch_bins(report.summary), headline=report.headline,
                            recipes=recipe_rows, study=run.to_dict())
        result.study["out"] = str(out / "study")
        result.seconds = time.time() - t_start
        result.text = format_story(result, architecture=cfg.train.architecture, train_limit=cfg.data.limit)
        (tmp / "demo.txt").write_text(result.text + "\n", encoding="utf-8")
        (tmp / "demo.json").write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str),
                                       encoding="utf-8")
    log(result.text)
    log(f"\nwrote {out}/study (pairs.parquet, models.parquet), {out}/report (report.html, report.md, summary.json, "
        f"figures/) and {out}/demo.json in {time.time() - t_start:.0f}s")
    return result


def shared_epoch_bins(summary: dict) -> list[dict]:
    """The report's shared-epoch analysis as rows: shared epochs, pairs, mean gain (points), P(gain > 0) with its
    95 % interval, collapse rate. Empty when the report skipped it (a single bin)."""
    se = (summary.get("analyses") or {}).get("shared_epochs") or {}
    if se.get("skipped") or not se.get("bins"):
        return []
    collapse = se.get("collapse") or [None] * len(se["bins"])
    return [{"shared_epochs": b["label"], "pairs": n, "mean_gain_pp": mean, "p_positive": pos["p"],
             "p_positive_lo": pos["lo"], "p_positive_hi": pos["hi"],
             "collapse_rate": c["p"] if c else None}
            for b, n, mean, pos, c in zip(se["bins"], se["n_by_bin"], se["acc"]["mean"], se["positive_by_bin"],
                                          collapse)]


def recipe_results(members: list[dict], test, val) -> list[dict]:
    """The uniform soups (all models; the last branch epoch) and the greedy and RADIN soups (decided on val),
    scored on test. A recipe that fails is reported as a row, not raised: the demo still shows the others."""
    from hfsoup.eval.metrics import evaluate_model
    from hfsoup.recipes.greedy import greedy_soup
    from hfsoup.recipes.mix import uniform_soup
    from hfsoup.recipes.radin import radin_soup

    ev = dict(progress=False, device="cpu", batch_size=500)
    rows = []
    last = max(m["branch_epoch"] for m in members)
    groups = [("uniform (all)", members), (f"uniform (branch epoch {last})",
                                           [m for m in members if m["branch_epoch"] == last])]
    for name, group in groups:
        if len(group) < 2:  # a quick run may hold a single model of the last epoch: no soup to make
            continue
        s = uniform_soup([m["ingredient"] for m in group])
        r = evaluate_model(s.create_model(), test, **ev)
        rows.append({"recipe": name, "models": len(group), "test_accuracy": r.accuracy, "test_loss": r.loss,
                     "note": ""})
    for fn, label, kw in ((greedy_soup, "greedy", {}), (radin_soup, "RADIN", {"seed": 0})):
        try:
            s = fn([m["ingredient"] for m in members], val, progress=False, **kw)
            r = evaluate_model(s.create_model(), test, **ev)
            chosen = [m["name"] for m, w in zip(members, s.weights) if w > 0]
            rows.append({"recipe": f"{label} (val)", "models": len(chosen), "test_accuracy": r.accuracy,
                         "test_loss": r.loss, "note": ", ".join(chosen[:4]) + ("…" if len(chosen) > 4 else "")})
        except Exception as e:  # noqa: BLE001 - one failed recipe must not hide the demo's other results
            rows.append({"recipe": label, "models": 0, "test_accuracy": float("nan"), "test_loss": float("nan"),
                         "note": f"failed: {type(e).__name__}: {e}"[:80]})
    return rows


def _limited(test: dict) -> str:
    total = test.get("split_size")
    if not test.get("limit") or not total or test["num_samples"] >= total:
        return ""
    return f" (the first {test['num_samples']} of {total}, to keep the demo near 2 minutes: --limit {total} for all)"


def format_story(result: DemoResult, *, architecture: str = "", train_limit: int | None = None) -> str:
    """The demo's printout: the zoo and its test set, the models, the gain by shared epochs, the headline
    findings beside the paper's, and the recipes against the best model."""
    n = int(result.test["num_samples"])
    epochs = sorted({m["branch_epoch"] for m in result.models})
    variants = sorted({m["variant"] for m in result.models})
    trained = f"{train_limit} training images of " if train_limit else ""
    lines = [f"Mini-zoo: {len(result.models)} branches ({len(epochs)} branch epochs x {len(variants)} variants) of "
             f"{architecture or 'a trunk'} trained on {trained}{result.dataset}",
             f"Test set: {n} images{_limited(result.test)}, so one image = {100 / n:.2f} accuracy points; "
             f"{result.study.get('total_rows', 0)} midpoint soups (alpha = 0.5)",
             "", "Branch test accuracy by branch epoch (min / mean / max over variants):"]
    for e in epochs:
        accs = [m["acc"] for m in result.models if m["branch_epoch"] == e]
        lines.append(f"  epoch {e:>3}: {100 * min(accs):5.1f} / {100 * sum(accs) / len(accs):5.1f} / "
                     f"{100 * max(accs):5.1f} %")
    if result.bins:
        lines += ["", "Soup gain (accuracy points vs the better ingredient) by shared epochs:",
                  f"{'shared epochs':>13} {'pairs':>6} {'mean gain':>10} {'P(gain>0) [95% CI]':>22} {'collapsed':>10}"]
        for b in result.bins:
            ci = f"{b['p_positive']:.2f} [{b['p_positive_lo']:.2f}-{b['p_positive_hi']:.2f}]"
            coll = "n/a" if b["collapse_rate"] is None else f"{b['collapse_rate']:.2f}"
            mean = "n/a" if b["mean_gain_pp"] is None else f"{b['mean_gain_pp']:+.2f}"
            lines.append(f"{b['shared_epochs']:>13} {b['pairs']:>6} {mean:>10} {ci:>22} {coll:>10}")
    lines += ["", "Headline (this mini-zoo; the paper's 104-model CIFAR-100 zoo beside it):"]
    width = max((len(h["finding"]) for h in result.headline), default=10)
    for h in result.headline:
        lines.append(f"  {h['finding']:<{width}}  {h['ours']:<34} paper: {h['paper']}")
    lines += ["", "Recipes vs the best ingredient (test accuracy):",
              f"{'recipe':<26} {'models':>6} {'accuracy':>9} {'gain':>7}  note"]
    for r in result.recipes:
        lines.append(f"{r['recipe']:<26} {r['models']:>6} {100 * r['test_accuracy']:>8.2f}% "
                     f"{100 * r['gain_vs_best']:>+7.2f}  {r['note']}")
    return "\n".join(lines)
