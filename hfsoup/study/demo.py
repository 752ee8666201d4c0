"""``hfsoup demo``: the embedded mini-zoo, souped and analysed offline in about a minute.

The mini-zoo (``hfsoup/assets/mini_zoo``) was trained by hfsoup's own zoo pipeline (:mod:`hfsoup.train`,
:mod:`hfsoup.zoo.build`) on scikit-learn's handwritten digits (``sklearn:digits``): a ``resnet10_cifar_nano`` trunk
with checkpoints and 4 variants (paper Table 2 scales) branched at several epochs. The demo evaluates every branch,
makes the α = 0.5 midpoint soup of every pair, bins the soup gain by shared epochs (the smaller branch epoch), runs
the uniform soup (and greedy / RADIN when available) and writes a table, a figure and a JSON report.
``hfsoup demo --rebuild`` retrains the mini-zoo from scratch with the same code.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources
from pathlib import Path

from hfsoup.core.files import atomic_folder, check_output

MINI_ZOO_YAML = """\
# The embedded mini-zoo: the paper's recipe shrunk to scikit-learn's digits and a 84k-parameter ResNet.
data:
  dataset: "sklearn:digits"
  image_column: img
  label_column: fine_label
  num_classes: 10
augment: {random_crop: true, padding: 4, hflip: false}
optim: {lr: 0.1, momentum: 0.9, weight_decay: 0.0005, nesterov: true, t_max: 14, eta_min: 0.0}
train:
  architecture: resnet10_cifar_nano
  epochs: 16
  batch_size: 32
  seed: 42
  checkpoint_interval: 2
  eval_batch_size: 500
branches:
  epochs: [2, 4, 8, 12]
  max_epochs: 2
  patience: 2
"""


def asset_dir() -> Path:
    """The embedded mini-zoo (``hfsoup/assets/mini_zoo``)."""
    return Path(str(resources.files("hfsoup").joinpath("assets", "mini_zoo")))


# -- rebuilding --------------------------------------------------------------------------------------------------
def package_zoo(work: Path, dest: Path, cfg) -> dict:
    """Copy the trunk checkpoints at branch epochs and every branch of ``work`` to ``dest``, weights as float16."""
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
    return {"models": len(folders), "dest": str(dest)}


def rebuild(work: str | Path, dest: str | Path | None = None, *, threads: int | None = 1, progress: bool = True,
            fresh: bool = True) -> dict:
    """Train the mini-zoo in ``work`` with :func:`hfsoup.zoo.build.build` and package it into ``dest``."""
    import torch

    from hfsoup.zoo.build import build
    from hfsoup.zoo.config import config_from_dict

    import yaml

    if threads:
        torch.set_num_threads(threads)
    work = Path(work)
    if fresh and work.exists():
        shutil.rmtree(work)
    cfg = config_from_dict(yaml.safe_load(MINI_ZOO_YAML))
    t0 = time.time()
    build(cfg, work, cpu=True, progress=progress)
    seconds = time.time() - t0
    res = package_zoo(work, Path(dest) if dest else asset_dir(), cfg)
    res["train_seconds"] = seconds
    return res


# -- the demo ------------------------------------------------------------------------------------------------
def collapse_threshold(num_classes: int) -> float:
    """A soup has collapsed when its accuracy is below max(5 %, 1.5 x chance)."""
    return max(0.05, 1.5 / max(1, num_classes))


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


def run_demo(out: str | Path, *, zoo: str | Path | None = None, force: bool = False, progress: bool = True,
             max_pairs: int | None = None, recipes: bool = True, log=print) -> dict:
    """Evaluate the mini-zoo, soup every pair at α = 0.5, run the recipes; write report.json, figure, table.

    Args:
        out: output folder (must not exist unless ``force``); written atomically.
        zoo: a zoo folder with ``branches/`` and ``zoo.yaml`` (default: the embedded mini-zoo).
        max_pairs: a quick run on at most this many pairs (:func:`select_pairs`: spread over the shared-epoch
            bins); only the models of those pairs are evaluated and given to the recipes. None: every pair.
        recipes: also compare the uniform, greedy and RADIN soups with the best model.
        log: where the tables go (``print``).
    Returns the report (also written to ``out/report.json``).
    """
    import numpy as np
    from tqdm.auto import tqdm

    from hfsoup.data.images import load_image_data
    from hfsoup.errors import HfSoupError, InvalidParameterError
    from hfsoup.eval.metrics import evaluate_model
    from hfsoup.recipes.mix import mix
    from hfsoup.zoo.config import load_config

    t_start = time.time()
    if max_pairs is not None and max_pairs < 1:
        raise InvalidParameterError(f"max_pairs must be >= 1 (or None: every pair), got {max_pairs}",
                                    parameter="max_pairs")
    out = check_output(out, force)
    zoo = Path(zoo) if zoo else asset_dir()
    if not (zoo / "branches").is_dir():
        raise HfSoupError(f"no zoo at '{zoo}' (expected branches/bNNN-vK folders): run `hfsoup demo --rebuild`",
                          path=zoo)
    cfg = load_config(zoo / "zoo.yaml")
    test = load_image_data(cfg.data.dataset, cfg.data.test_split, progress=False)
    val = load_image_data(cfg.data.dataset, cfg.data.val_split, progress=False)
    members = load_zoo_members(zoo)
    pairs = select_pairs(members, max_pairs)
    if max_pairs is not None:  # a quick run: only the models of the selected pairs
        used = sorted({k for pair in pairs for k in pair})
        index = {old: new for new, old in enumerate(used)}
        members = [members[k] for k in used]
        pairs = [(index[i], index[j]) for i, j in pairs]
    ev = dict(progress=False, device="cpu", batch_size=128)
    for m in tqdm(members, desc="evaluating models", disable=not progress, leave=False):
        r = evaluate_model(m["ingredient"].create_model(), test, **ev)
        m["test"] = r.to_dict()
    thr = collapse_threshold(cfg.data.num_classes)
    rows = []
    for i, j in tqdm(pairs, desc="pairwise soups", disable=not progress, leave=False):
        a, b = members[i], members[j]
        soup = mix(a["ingredient"], b["ingredient"], 0.5)
        r = evaluate_model(soup.create_model(), test, **ev)
        best = max(a["test"]["accuracy"], b["test"]["accuracy"])
        best_loss = min(a["test"]["loss"], b["test"]["loss"])
        rows.append({"a": a["name"], "b": b["name"], "shared_epochs": min(a["branch_epoch"], b["branch_epoch"]),
                     "same_branch_epoch": a["branch_epoch"] == b["branch_epoch"],
                     "soup_accuracy": r.accuracy, "soup_loss": r.loss, "best_ingredient_accuracy": best,
                     "accuracy_gain": r.accuracy - best, "loss_gain": best_loss - r.loss,
                     "collapsed": r.accuracy < thr})
    bins = []
    for e in sorted({r["shared_epochs"] for r in rows}):
        g = np.array([r["accuracy_gain"] for r in rows if r["shared_epochs"] == e])
        c = np.array([r["collapsed"] for r in rows if r["shared_epochs"] == e])
        bins.append({"shared_epochs": e, "pairs": int(len(g)), "mean_gain": float(g.mean()),
                     "median_gain": float(np.median(g)), "p_gain_positive": float((g > 0).mean()),
                     "collapse_rate": float(c.mean())})
    best_member = max(members, key=lambda m: m["test"]["accuracy"])
    recipe_rows = [{"recipe": "best ingredient", "models": 1, "test_accuracy": best_member["test"]["accuracy"],
                    "test_loss": best_member["test"]["loss"], "note": best_member["name"]}]
    if recipes:
        recipe_rows += _recipe_rows(members, test, val, ev)
    for r in recipe_rows:
        r["gain_vs_best"] = r["test_accuracy"] - best_member["test"]["accuracy"]
    report = {
        "zoo": str(zoo), "dataset": cfg.data.dataset, "split": cfg.data.test_split, "test": test.describe(),
        "collapse_threshold": thr,
        "models": [{k: m[k] for k in ("name", "branch_epoch", "variant", "test")} | {"path": m["path"]}
                   for m in members],
        "pairs": rows, "bins": bins, "recipes": recipe_rows, "seconds": time.time() - t_start,
    }
    table = format_tables(report)
    with atomic_folder(out, force=force) as tmp:
        _plot(rows, bins, tmp / "soup_gain_vs_shared_epochs.png")
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        (tmp / "report.txt").write_text(table + "\n", encoding="utf-8")
    report["seconds"] = time.time() - t_start
    log(table)
    log(f"\nwrote {out}/report.json, {out}/report.txt and {out}/soup_gain_vs_shared_epochs.png "
        f"({report['seconds']:.0f}s)")
    return report


def _recipe_rows(members: list[dict], test, val, ev: dict) -> list[dict]:
    """The uniform soups (all models; the last branch epoch) and the greedy and RADIN soups (decided on val),
    scored on test. A recipe that fails is reported as a row, not raised: the demo still shows the others."""
    from hfsoup.eval.metrics import evaluate_model
    from hfsoup.recipes.greedy import greedy_soup
    from hfsoup.recipes.mix import uniform_soup
    from hfsoup.recipes.radin import radin_soup

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


def format_tables(report: dict) -> str:
    """The demo's text tables: soup gain by shared epochs, and the recipes against the best model."""
    lines = [f"Mini-zoo: {len(report['models'])} branches of {report['dataset']}; "
             f"{len(report['pairs'])} midpoint soups (alpha = 0.5) on the {report['split']} split",
             "", "Soup gain (accuracy points vs the better ingredient) by shared epochs:",
             f"{'shared epochs':>13} {'pairs':>6} {'mean gain':>10} {'P(gain>0)':>10} {'collapsed':>10}"]
    for b in report["bins"]:
        lines.append(f"{b['shared_epochs']:>13} {b['pairs']:>6} {100 * b['mean_gain']:>+10.2f} "
                     f"{b['p_gain_positive']:>10.2f} {b['collapse_rate']:>10.2f}")
    lines += ["", "Recipes vs the best ingredient (test accuracy):",
              f"{'recipe':<26} {'models':>6} {'accuracy':>9} {'gain':>7}  note"]
    for r in report["recipes"]:
        lines.append(f"{r['recipe']:<26} {r['models']:>6} {100 * r['test_accuracy']:>8.2f}% "
                     f"{100 * r['gain_vs_best']:>+7.2f}  {r['note']}")
    return "\n".join(lines)


def _plot(rows, bins, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.array([r["shared_epochs"] for r in rows], dtype=float)
    y = np.array([100 * r["accuracy_gain"] for r in rows])
    jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(x))
    ax1.scatter(x + jitter, y, s=10, alpha=0.5)
    ax1.plot([b["shared_epochs"] for b in bins], [100 * b["mean_gain"] for b in bins], "o-", color="C3",
             label="mean")
    ax1.axhline(0, color="k", lw=0.8)
    ax1.set_xlabel("shared epochs (smaller branch epoch)")
    ax1.set_ylabel("soup gain (accuracy points)")
    ax1.set_title("Midpoint soup gain vs shared epochs")
    ax1.legend()
    ax2.plot([b["shared_epochs"] for b in bins], [b["p_gain_positive"] for b in bins], "o-", label="P(gain > 0)")
    ax2.plot([b["shared_epochs"] for b in bins], [b["collapse_rate"] for b in bins], "s--", label="collapse rate")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_xlabel("shared epochs")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
