"""What a new user meets (issue 11): the README's offline walk-through runs as written, its Hub examples are marked
and never overwrite each other, ``hfsoup demo --rebuild`` records and compares the conditions a bit-for-bit
rebuild needs, and the tables, the demo figure and the report say what a reader needs (distinct model names, the
score RADIN ranks by, titles and axis labels, what one test image is worth)."""

from __future__ import annotations

import glob
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


# ---------------------------------------------------------------------------------------------------- README
def _bash_blocks(text: str) -> list[tuple[int, str]]:
    """(offset, body) of every ```bash block."""
    return [(m.start(), m.group(1)) for m in re.finditer(r"```bash\n(.*?)```", text, re.S)]


def _commands(block: str) -> list[str]:
    """The command lines of a shell block: continuation lines joined, comments and blank lines dropped."""
    lines, current = [], ""
    for raw in block.splitlines():
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if shlex.split(current, comments=True):
            lines.append(current.strip())
        current = ""
    return lines


def walkthrough_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- walkthrough -->\s*```bash\n(.*?)```\s*<!-- /walkthrough -->", text, re.S)
    assert m, "README.md has no block marked <!-- walkthrough --> … <!-- /walkthrough -->"
    return _commands(m.group(1))


def _argv(line: str) -> list[str]:
    """The arguments of one ``hfsoup`` line as the shell passes them (globs expanded, sorted; one that matches
    nothing is an error here: in the README it would be a typo)."""
    tokens = shlex.split(line, comments=True)
    assert tokens[0] == "hfsoup", f"the walk-through runs hfsoup commands only: {line}"
    out = []
    for t in tokens[1:]:
        if any(c in t for c in "*?["):
            matches = sorted(glob.glob(t))
            assert matches, f"'{t}' matches nothing: {line}"
            out += matches
        else:
            out.append(t)
    return out


@pytest.mark.slow  # about 40 s of CPU: eleven commands on the nano models, 200 test images
def test_readme_walkthrough_runs_offline_in_order(tmp_path, monkeypatch, capsys):
    """Every line of the marked block, in order, from a folder laid out like the checkout (the mini-zoo at
    hfsoup/assets/mini_zoo), with the Hub switched off: each exits 0 and writes what the README says."""
    from hfsoup.cli import main
    from hfsoup.study.demo import asset_dir

    if not (asset_dir() / "branches").is_dir():
        pytest.skip("mini-zoo assets not built")
    commands = walkthrough_commands()
    assert len(commands) >= 8
    outs = [a[a.index("--out") + 1] for a in (shlex.split(c, comments=True) for c in commands) if "--out" in a]
    assert len(outs) == len(set(outs)), f"the walk-through reuses an --out: {outs}"
    for c in commands:  # offline data only: no Hub model or dataset id
        assert "--dataset" not in c or "--dataset sklearn:digits" in c, c
        assert "org/" not in c and "uoft-cs" not in c, c

    (tmp_path / "hfsoup" / "assets").mkdir(parents=True)
    (tmp_path / "hfsoup" / "assets" / "mini_zoo").symlink_to(asset_dir(), target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for line in commands:
        code = main(_argv(line))
        captured = capsys.readouterr()
        assert code == 0, f"{line}\n{captured.err[-2000:]}"
    tour = tmp_path / "tour"
    for path in ("soup-ab/model.safetensors", "soup-ab/soup.json", "curve/alpha-0.250/model.safetensors",
                 "soup-u/model.safetensors", "greedy/soup.json", "radin/soup.json", "study/pairs.parquet",
                 "study/report/report.html"):
        assert (tour / path).is_file(), path


def test_readme_examples_are_marked_and_never_overwrite_each_other():
    """Commands that write a new folder (mix, soup, demo, data cifar100c) never reuse an --out that an earlier
    example wrote, unless they say --force; every block with Hub ids outside the walk-through is introduced as
    needing the Hub."""
    text = README.read_text(encoding="utf-8")
    seen: dict[str, str] = {}
    for offset, block in _bash_blocks(text):
        cmds = _commands(block)
        for c in cmds:
            tokens = shlex.split(c, comments=True)
            if tokens[0] != "hfsoup" or "--out" not in tokens:
                continue
            if tokens[1] not in ("mix", "soup", "demo") and tokens[1:3] != ["data", "cifar100c"]:
                continue  # zoo build, study run, zoo pull: resumable, a shared folder is the point
            out = tokens[tokens.index("--out") + 1].removeprefix("./").rstrip("/")
            assert out not in seen or "--force" in tokens, f"--out {out} again:\n  {seen.get(out)}\n  {c}"
            seen[out] = c
        hub = [c for c in cmds if re.search(r"\borg/|my-org|uoft-cs/|hfsoup push|\bpush\b", c)]
        if hub:
            before = text[max(0, offset - 700):offset]
            assert "need the Hub" in before or "needs the Hub" in before.lower(), \
                f"a block with Hub examples is not marked as needing the Hub: {hub[0]}"
    assert "ings = hfsoup.load_ingredients" in text
    api = text.index("ings = hfsoup.load_ingredients")
    assert "Needs the Hub" in text[api - 300:api]


# ----------------------------------------------------------------------------------------- demo --rebuild
@pytest.fixture
def keep_threads():
    """rebuild() sets torch's thread count (one training thread): give the other tests theirs back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _fake_build(calls: list):
    """A stand-in for hfsoup.zoo.build.build: lays out the committed mini-zoo's weights as a finished build."""
    from hfsoup.study.demo import asset_dir
    from hfsoup.zoo.layout import branch_dir, trunk_dir

    def build(cfg, work, cpu=True, progress=True):
        calls.append(Path(work))
        for e in cfg.branches.epochs:
            shutil.copytree(asset_dir() / "trunk" / f"e{e:03d}", trunk_dir(work, e))
            for k in sorted(cfg.branches.variants):
                shutil.copytree(asset_dir() / "branches" / f"b{e:03d}-v{k}", branch_dir(work, e, k))
        (Path(work) / "logs").mkdir(parents=True, exist_ok=True)
        (Path(work) / "logs" / "trunk.jsonl").write_text('{"epoch": 1}\n')
    return build


def test_committed_mini_zoo_records_its_build_conditions():
    from hfsoup.study.demo import REPRODUCIBILITY_KEYS, asset_dir, read_build_record

    record = read_build_record(asset_dir())
    assert record is not None and set(REPRODUCIBILITY_KEYS) <= set(record["conditions"])
    assert record["conditions"]["threads"] == 1 and record["models"] == 30
    # the torch version recorded is the one the weights' metadata names
    from safetensors import safe_open

    with safe_open(str(asset_dir() / "branches" / "b040-v1" / "model.safetensors"), "pt") as f:
        versions = json.loads(f.metadata()["library_versions"])
    assert record["conditions"]["torch"] == versions["torch"]


def test_rebuild_records_the_conditions_and_notes_when_they_differ(tmp_path, monkeypatch, keep_threads):
    import torch

    import hfsoup.zoo.build
    from hfsoup.study import demo

    calls: list = []
    monkeypatch.setattr(hfsoup.zoo.build, "build", _fake_build(calls))
    here = demo.build_conditions(1)
    assert here["torch"] == torch.__version__ and here["threads"] == 1
    assert here["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    other_capability = "AVX2" if here["cpu_capability"] != "AVX2" else "AVX512"  # differs from this machine's
    recorded = dict(here, torch="2.0.0+old", cpu_capability=other_capability, system="Other")  # system: not compared
    monkeypatch.setattr(demo, "read_build_record", lambda zoo: {"conditions": recorded})
    lines: list[str] = []
    res = demo.rebuild(tmp_path / "work", tmp_path / "packaged", threads=1, progress=False, log=lines.append)

    assert calls == [tmp_path / "work"]
    # recorded: this machine's conditions, beside the packaged weights
    saved = json.loads((tmp_path / "packaged" / demo.BUILD_FILE).read_text())
    assert saved["conditions"] == here == res["conditions"] and saved["models"] == 30
    assert saved["reproducibility_keys"] == list(demo.REPRODUCIBILITY_KEYS)
    # one note line before training, naming what differs (and only that), then the comparison of the weights
    assert len(lines) == 2 and lines[0] == res["note"]
    assert lines[0].startswith("note: the committed mini-zoo was built under other conditions (torch 2.0.0+old "
                               f"there, {torch.__version__} here; cpu_capability {other_capability} there, "
                               f"{here['cpu_capability']} here)")
    assert "system" not in lines[0] and "\n" not in lines[0]
    assert res["identical"] == [30, 30]
    # one changed tensor is told apart
    from safetensors.torch import load_file, save_file

    f = tmp_path / "packaged" / "branches" / "b040-v2" / "model.safetensors"
    tensors = load_file(str(f))
    key = next(k for k, t in tensors.items() if t.is_floating_point())
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] += 1
    save_file(tensors, str(f))
    assert demo.compare_weights(tmp_path / "packaged", demo.asset_dir()) == (29, 30)
    assert lines[1] == ("rebuilt mini-zoo: 30 of 30 models bit for bit identical to the committed one (as packaged, "
                        "float16)")


def test_rebuild_under_the_same_conditions_says_nothing_and_cli_prints_the_note(tmp_path, monkeypatch, capsys,
                                                                                keep_threads):
    import hfsoup.zoo.build
    from hfsoup.cli import main
    from hfsoup.study import demo

    monkeypatch.setattr(hfsoup.zoo.build, "build", _fake_build([]))
    same = demo.build_conditions(1)
    assert demo.conditions_note(dict(same, python="0.0", platform="x"), same) is None
    assert demo.conditions_note(dict(same, threads=2), same).count("threads 2 there, 1 here") == 1
    assert "records no build conditions" in demo.conditions_note(None, same)
    monkeypatch.setattr(demo, "read_build_record", lambda zoo: {"conditions": same})
    lines: list[str] = []
    res = demo.rebuild(tmp_path / "w1", tmp_path / "p1", progress=False, log=lines.append)
    assert res["note"] is None and lines == ["rebuilt mini-zoo: 30 of 30 models bit for bit identical to the "
                                             "committed one (as packaged, float16)"]

    # the command line: the note goes to stderr, then the demo runs on the rebuilt zoo
    monkeypatch.setattr(demo, "read_build_record", lambda zoo: {"conditions": dict(same, torch="1.0")})
    ran = []
    monkeypatch.setattr(demo, "run_demo", lambda out, zoo=None, **kw: ran.append(Path(zoo)))
    assert main(["-q", "demo", "--rebuild", "--work", str(tmp_path / "w2"), "--out", str(tmp_path / "d")]) == 0
    err = capsys.readouterr().err
    assert f"(torch 1.0 there, {same['torch']} here)" in err
    assert ran == [tmp_path / "w2" / "packaged"] and (ran[0] / demo.BUILD_FILE).is_file()


# ------------------------------------------------------------------------------------------------- tables
def _table_rows(text: str) -> list[list[str]]:
    """The body rows of the rich tables in ``text``: cells stripped."""
    return [[c.strip() for c in line.strip().strip("│").split("│")] for line in text.splitlines()
            if line.startswith("│")]


def test_unique_names_grow_to_the_shortest_distinct_suffix():
    from hfsoup.cli.output import unique_names

    refs = ["/data/runs/seed-1/checkpoints/final", "/data/runs/seed-2/checkpoints/final", "./models/other",
            "org/model@v1", "hf-hub:org/model@v2", "local-dir:/x/y/alone/"]
    assert unique_names(refs) == {
        "/data/runs/seed-1/checkpoints/final": "seed-1/checkpoints/final",
        "/data/runs/seed-2/checkpoints/final": "seed-2/checkpoints/final",
        "./models/other": "other", "org/model@v1": "model@v1", "hf-hub:org/model@v2": "model@v2",
        "local-dir:/x/y/alone/": "alone"}
    assert unique_names(["a/b", "c/b", "a/b"]) == {"a/b": "a/b", "c/b": "c/b"}


def _cell(acc: float, loss: float) -> dict:
    return {"accuracy": acc, "loss": loss}


def test_corrupted_tables_show_short_distinct_names(monkeypatch, capsys):
    from hfsoup.cli.corrupted import print_eval_tables, print_soup_tables

    monkeypatch.setenv("COLUMNS", "100")
    long = "/home/someone/experiments/cifar100/resnet50/2026-11-22/very-long-sweep-name"
    a, b = f"{long}/lr-0.1/final", f"{long}/lr-0.2/final"
    sev = {"s3": _cell(0.5, 2.0)}
    doc = {"corrupted": {"data": {"severities": [3], "corruptions": ["fog"], "config": "severity 3",
                                  "dataset": "./cifar100-c"},
                         "ingredients": {a: {"mean": sev}, b: {"mean": {"s3": _cell(0.4, 2.2)}}},
                         "soups": [{"weights": [0.5, 0.5], "mean": {"s3": _cell(0.55, 1.9)},
                                    "gain": {"s3": {"accuracy_gain": 0.05, "loss_gain": 0.1}}}]}}
    print_soup_tables(doc)
    rows = _table_rows(capsys.readouterr().out)
    assert [r[0] for r in rows] == ["lr-0.1/final", "lr-0.2/final", "soup 0.5,0.5"]
    assert rows[0][1] == "50.00% / 2.000"

    models = [{"reference": ref, "corrupted": {"per_corruption": {"fog": sev}, "mean": sev}} for ref in (a, b)]
    print_eval_tables({"corrupted_data": {"severities": [3], "dataset": "./cifar100-c", "config": "severity 3"},
                       "models": models})
    out = capsys.readouterr().out
    assert "lr-0.1/final on CIFAR-100-C" in out and "lr-0.2/final on CIFAR-100-C" in out
    assert long not in out


def test_radin_table_shows_its_score_the_top_rows_and_the_winner(monkeypatch, capsys):
    from hfsoup.cli.soup import print_decision_log

    monkeypatch.setenv("COLUMNS", "160")
    refs = [f"./zoo/m{i:02d}" for i in range(8)]
    lam = 0.01
    cands = []
    for r in range(1, 31):  # rank r: score = proxy loss - λ·size rises with r; the proxy loss alone does not
        size = 1 + r % 4
        score = 1.0 + r / 100
        cands.append({"id": 100 + r, "members": list(range(size)), "size": size, "rank": r,
                      "proxy_loss": score + lam * size, "proxy_accuracy": 0.5, "objective": score,
                      "evaluated": True, "accuracy": 0.6 + (0.2 if r == 17 else 0.0), "loss": 1.0})
    cands.append({"id": 999, "members": [0], "size": 1, "rank": 31, "proxy_loss": 9.0, "proxy_accuracy": 0.1,
                  "objective": 9.0})  # not evaluated: never listed
    log = {"recipe": "radin", "heldout": {"split": "val"}, "num_candidates": 31, "proxy": "loss",
           "prior_lambda": lam, "candidates": cands, "winner": {"id": 117},
           "ingredients": [{"reference": r} for r in refs]}
    print_decision_log(log, {r: Path(r).name for r in refs})
    out = capsys.readouterr().out
    assert "ranked by score = proxy loss − 0.01·size, lower is better" in " ".join(out.split())  # (title wrapped)
    header = next(line for line in out.splitlines() if "rank" in line and "members" in line)
    assert [h.strip() for h in header.strip("┃ ").split("┃")][:5] == ["rank", "members", "score", "proxy loss",
                                                                     "held-out acc"]
    rows = _table_rows(out)
    assert [r[0] for r in rows] == [str(r) for r in range(1, 11)] + ["17"]
    assert rows[0][2] == "1.0100" and rows[0][3] == f"{1.01 + lam * 2:.4f}"
    assert rows[-1][-1] == "winner" and rows[-1][4] == "80.00%"
    assert out.rstrip().splitlines()[-1] == "… 19 more evaluated candidates not shown (--json keeps all)"


# ------------------------------------------------------------------------------------------------ figures
def _captured_figures(monkeypatch) -> dict:
    from hfsoup.study import figures

    figs = {}

    def keep(fig, folder, name, svg):
        figs[name] = fig
        return [Path(folder) / f"{name}.png"]
    monkeypatch.setattr(figures, "_save", keep)
    return figs


def _shared_epoch_table(with_loss: bool):
    from hfsoup.study.analysis import PairTable

    gains = [-3.0, -1.0, 0.0, 0.2, -0.5, 1.0, 2.0, 0.7, 0.4]
    cols = {"row_id": [f"r{i}" for i in range(9)], "status": ["ok"] * 9,
            "model_a": [f"a{i}" for i in range(9)], "model_b": [f"b{i}" for i in range(9)], "alpha": [0.5] * 9,
            "acc_gain": [g / 100 for g in gains], "shared_epochs": [10, 10, 10, 10, 20, 20, 20, 30, 30]}
    if with_loss:
        cols["loss_gain"] = [g / 10 for g in gains]
    return PairTable.from_columns(cols)


@pytest.mark.parametrize("with_loss", [True, False])
def test_every_panel_of_the_gain_figures_has_a_title_and_axis_labels(tmp_path, monkeypatch, with_loss):
    from hfsoup.study import analysis as an
    from hfsoup.study import figures

    figs = _captured_figures(monkeypatch)
    a = an.analyse(_shared_epoch_table(with_loss), n_boot=20)
    assert (a.shared_epochs.loss is None) == (not with_loss)
    figures.gain_cdf(a.gain, tmp_path)
    figures.gain_vs_shared_epochs(a.shared_epochs, tmp_path)
    figures.gain_quantiles_vs_shared_epochs(a.shared_epochs, tmp_path)
    assert sorted(figs) == ["gain_cdf", "gain_quantiles_vs_shared_epochs", "gain_vs_shared_epochs"]
    for name, fig in figs.items():
        for ax in fig.axes:
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), (name, ax.get_title())
    left, right = figs["gain_vs_shared_epochs"].axes  # the demo's figure (docs/figures)
    assert right.get_title() == "P(loss gain > k) vs shared epochs"
    assert right.get_xlabel() == "shared epochs" and right.get_ylabel() == "P(loss gain > k) (%)"
    assert "loss gain: its loss − the soup's" in figs["gain_vs_shared_epochs"].get_suptitle()


# ------------------------------------------------------------------------------------------------- report
def _tiny_study(folder: Path, settings: dict | None) -> Path:
    from hfsoup.study.store import write_table

    folder.mkdir(parents=True)
    write_table(folder / "pairs.parquet", [
        {"row_id": "r1", "status": "ok", "model_a": "a", "model_b": "b", "alpha": 0.5, "acc_gain": 0.005,
         "loss_gain": -0.1, "shared_epochs": 10}])
    if settings is not None:
        (folder / "study.json").write_text(json.dumps({"settings": settings}))
    return folder


@pytest.mark.parametrize("n, total, expected", [
    (200, 360, "Test data: `sklearn:digits`, test split of 360 images, the first 200 evaluated (`--limit 200`): "
               "one image is 0.50 accuracy points here (0.28 on the whole split)."),
    (360, 360, "Test data: `sklearn:digits`, test split of 360 images, all evaluated: one image is 0.28 accuracy "
               "points."),
    (10000, None, "Test data: `sklearn:digits`, test split, 10,000 images evaluated: one image is 0.01 accuracy "
                  "points."),
])
def test_report_says_the_test_split_size_and_what_one_image_is_worth(tmp_path, n, total, expected):
    from hfsoup.study.report import write_report

    settings = {"dataset": "sklearn:digits", "split": "test", "num_samples": n,
                "limit": n if total and n < total else None}
    if total is not None:
        settings["split_size"] = total
    res = write_report(_tiny_study(tmp_path / "study", settings), tmp_path / "rep", n_boot=20, svg=False)
    md = res.report_md.read_text()
    assert expected in md
    assert md.index(expected) < md.index("## Headline")  # said up front, not only in the limits at the end
    assert "test split" not in write_report(_tiny_study(tmp_path / "bare", None), tmp_path / "rep2", n_boot=20,
                                            svg=False).report_md.read_text().split("## Headline")[0]


def test_study_run_records_the_whole_test_split_size(tmp_path):
    from hfsoup.study.demo import asset_dir
    from hfsoup.study.run import StudyConfig, plan_study

    if not (asset_dir() / "branches").is_dir():
        pytest.skip("mini-zoo assets not built")
    cfg = StudyConfig(sources=[str(asset_dir())], out=tmp_path / "s", dataset="sklearn:digits", limit=50,
                      epochs="40", progress=False)
    settings = plan_study(cfg).settings
    assert (settings["num_samples"], settings["split_size"], settings["limit"]) == (50, 360, 50)
    cfg.limit = None
    assert plan_study(cfg).settings["split_size"] == 360
