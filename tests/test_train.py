"""Zoo training: exported checkpoints and metadata, exact resume, branch hyperparameters (paper Table 2), the build
plan and command, two CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import folder_metadata as _meta, folder_weights as _weights, write_parquet_dataset

REQUIRED_META = {"kind", "lr_scale", "momentum_scale", "weight_decay_scale", "lr", "momentum", "weight_decay", "seed",
                 "data_seed", "val_accuracy", "val_loss", "test_accuracy", "test_loss", "dataset", "dataset_revision",
                 "architecture", "parent", "library_versions"}


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    data = write_parquet_dataset(root / "data", n_train=68, n_test=16, num_classes=10)
    cfg = {"data": {"dataset": str(data), "num_classes": 10},
           "optim": {"t_max": 2},
           "train": {"architecture": "resnet10_cifar_nano", "epochs": 3, "batch_size": 16, "checkpoint_interval": 1,
                     "eval_batch_size": 64},
           "branches": {"epochs": [2], "max_epochs": 2, "patience": 1}}
    path = root / "zoo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


#: Paper Table 2, typed in from the paper: (lr, momentum, weight decay) scales of each branch variant.
TABLE_2 = {1: (0.7073, 1.1009, 0.8284), 2: (1.2244, 0.9247, 1.1150), 3: (0.5112, 1.0695, 1.1099),
           4: (0.5373, 0.8594, 0.9078)}


@pytest.fixture(scope="module")
def trunk_run(tiny_config, tmp_path_factory):
    from hfsoup.zoo.loops import train_trunk
    from hfsoup.zoo.config import load_config

    out = tmp_path_factory.mktemp("runs") / "zoo"
    res = train_trunk(load_config(tiny_config), out, cpu=True, progress=False)
    return out, res


def test_config_defaults_are_the_paper_recipe(tmp_path):
    from hfsoup.errors import OutputExistsError
    from hfsoup.zoo.config import ZooConfig, init_config, load_config

    path = init_config(tmp_path / "zoo.yaml")
    cfg = load_config(path)
    assert cfg.to_dict() == ZooConfig().to_dict()
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.t_max) == (0.1, 0.9, 5e-4, 280)
    assert cfg.train.epochs == 300 and cfg.train.batch_size == 128 and cfg.train.seed == 42
    assert cfg.branches.epochs == list(range(50, 301, 10))
    # the written YAML and the dataclass defaults both hold the paper's Table 2 (not just the same constant)
    for config in (cfg, ZooConfig()):
        got = {k: (v["lr_scale"], v["momentum_scale"], v["weight_decay_scale"])
               for k, v in config.branches.variants.items()}
        assert got == TABLE_2
    with pytest.raises(OutputExistsError):
        init_config(path)


def test_trunk_exports_checkpoints_with_metadata(trunk_run, tiny_config):
    out, res = trunk_run
    assert (out / "zoo.yaml").is_file()
    for e in (1, 2, 3):
        folder = out / "trunk" / f"e{e:03d}"
        assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in folder.iterdir()}
        assert (out / "state" / "trunk" / f"e{e:03d}" / "state.pt").is_file()
        meta = _meta(folder)
        assert REQUIRED_META <= set(meta), REQUIRED_META - set(meta)
        assert meta["kind"] == "trunk" and meta["epoch"] == e and meta["architecture"] == "resnet10_cifar_nano"
        assert meta["lr"] == pytest.approx(0.1) and meta["lr_scale"] == 1.0
    assert json.loads((out / "trunk" / "e003" / "config.json").read_text())["num_classes"] == 10
    # the exported weights are the final model
    from hfsoup.zoo.trainer import state_hash

    assert res.kind == "trunk" and res.epoch == 3 and not res.stopped
    assert state_hash(_weights(out / "trunk" / "e003")) == res.state_sha256
    assert res.test["accuracy"] == _meta(out / "trunk" / "e003")["test_accuracy"]
    # the exported scores are what hfsoup's evaluation reports for the same folder
    from hfsoup.data.images import load_image_data
    from hfsoup.eval.metrics import evaluate_model
    from hfsoup.core.ingredients import load_ingredient

    cfg = yaml.safe_load(tiny_config.read_text())
    test = load_image_data(cfg["data"]["dataset"], "test", progress=False)
    r = evaluate_model(load_ingredient(str(out / "trunk" / "e003")).create_model(), test, progress=False)
    assert _meta(out / "trunk" / "e003")["test_accuracy"] == pytest.approx(r.accuracy)


def test_resume_after_kill_is_bit_identical(trunk_run, tiny_config, tmp_path):
    from hfsoup.zoo.config import load_config
    from hfsoup.zoo.loops import train_trunk

    out, _ = trunk_run
    cfg = load_config(tiny_config)
    other = tmp_path / "zoo"
    killed = train_trunk(cfg, other, cpu=True, progress=False, stop_after_epoch=1)  # "killed" after epoch 1
    assert killed.stopped and killed.epoch == 1
    assert not (other / "trunk" / "e002").exists()
    res = train_trunk(cfg, other, cpu=True, progress=False)  # resumes from state/trunk/e001
    assert res.epoch == 3 and not res.stopped
    a, b = _weights(out / "trunk" / "e003"), _weights(other / "trunk" / "e003")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_branch_scales_hyperparameters(trunk_run, tiny_config):
    from hfsoup.zoo.config import load_config
    from hfsoup.zoo.loops import train_branch
    from hfsoup.zoo.trainer import Trainer

    out, _ = trunk_run
    cfg = load_config(tiny_config)
    trunk_state = torch.load(out / "state" / "trunk" / "e002" / "state.pt", weights_only=False)
    trunk_lr = trunk_state["optimizer"]["param_groups"][0]["lr"]
    t = Trainer(cfg, out, cpu=True, progress=False)
    res = train_branch(cfg, out, 2, 2, trainer=t)
    lr_s, m_s, wd_s = TABLE_2[2]
    g = t.optimizer_view.param_groups[0]
    assert g["momentum"] == pytest.approx(0.9 * m_s)
    assert g["weight_decay"] == pytest.approx(5e-4 * wd_s)
    assert g["initial_lr"] == pytest.approx(0.1 * lr_s)
    meta = _meta(out / "branches" / "b002-v2")
    assert REQUIRED_META <= set(meta)
    assert meta["kind"] == "branch" and meta["branch_epoch"] == 2 and meta["variant"] == 2
    assert meta["parent"] == "trunk/e002" and meta["data_seed"] == 42 + 1000 * 2 + 2
    assert (meta["lr_scale"], meta["momentum_scale"], meta["weight_decay_scale"]) == TABLE_2[2]
    assert meta["lr"] == pytest.approx(0.1 * lr_s)
    assert meta["momentum"] == pytest.approx(0.9 * m_s)
    assert meta["weight_decay"] == pytest.approx(5e-4 * wd_s)
    # the first branch epoch ran with the trunk's lr at epoch 2, scaled
    log = [json.loads(line) for line in (out / "logs" / "b002-v2.jsonl").read_text().splitlines()]
    assert log[0]["epoch"] == 3 and log[0]["lr"] == pytest.approx(trunk_lr * lr_s)
    assert res.kind == "branch" and res.name == "b002-v2" and not res.stopped
    assert res.best_epoch in (3, 4) and res.best_epoch == meta["best_epoch"]
    assert res.test["accuracy"] == meta["test_accuracy"]
    assert not (out / "state" / "branches" / "b002-v2").exists()


@pytest.mark.parametrize("variant", [1, 2, 3, 4])
def test_every_variant_trains_with_the_table_2_hyperparameters(trunk_run, tiny_config, tmp_path, variant):
    """The optimiser a branch trains with holds the trunk's hyperparameters times the paper's scales, for every
    variant (the baseline read from the trunk state, the scales typed in from the paper)."""
    import shutil

    from hfsoup.zoo.config import load_config
    from hfsoup.zoo.loops import train_branch
    from hfsoup.zoo.trainer import Trainer

    out, _ = trunk_run
    cfg = load_config(tiny_config)
    z = tmp_path / "zoo"
    shutil.copytree(out / "state" / "trunk" / "e002", z / "state" / "trunk" / "e002")
    base = torch.load(z / "state" / "trunk" / "e002" / "state.pt", weights_only=False)["optimizer"]["param_groups"]
    t = Trainer(cfg, z, cpu=True, progress=False)
    res = train_branch(cfg, z, 2, variant, trainer=t, stop_after_epoch=3)
    assert res.stopped and res.epoch == 3
    lr_s, m_s, wd_s = TABLE_2[variant]
    groups = t.optimizer_view.param_groups
    assert len(groups) == len(base)
    for g, b in zip(groups, base):
        assert (b["initial_lr"], b["momentum"], b["weight_decay"]) == pytest.approx((0.1, 0.9, 5e-4))
        assert g["initial_lr"] == pytest.approx(b["initial_lr"] * lr_s)
        assert g["momentum"] == pytest.approx(b["momentum"] * m_s)
        assert g["weight_decay"] == pytest.approx(b["weight_decay"] * wd_s)
        assert g["nesterov"] == b["nesterov"]
    row = json.loads((z / "logs" / f"b002-v{variant}.jsonl").read_text().splitlines()[0])
    assert row["lr"] == pytest.approx(base[0]["lr"] * lr_s)  # the lr of epoch 3 that the trunk would have used


def test_zoo_build_plan_is_resumable(trunk_run, tiny_config, tmp_path):
    import shutil

    from hfsoup.zoo.build import plan
    from hfsoup.zoo.config import load_config

    out, _ = trunk_run
    cfg = load_config(tiny_config)
    branches = [("branch", 2, k) for k in (1, 2, 3, 4)]
    assert plan(cfg, tmp_path / "empty") == [("trunk", 2)] + branches
    z = tmp_path / "zoo"
    shutil.copytree(out / "state" / "trunk" / "e002", z / "state" / "trunk" / "e002")
    shutil.copytree(out / "trunk" / "e002", z / "trunk" / "e002")
    assert plan(cfg, z) == branches  # the trunk has every branch epoch already
    shutil.copytree(out / "trunk" / "e002", z / "branches" / "b002-v3")  # an exported branch is done
    assert plan(cfg, z) == [("branch", 2, k) for k in (1, 2, 4)]
    (z / "state" / "trunk" / "e002" / "state.pt").unlink()  # branches start from the full state
    assert plan(cfg, z)[0] == ("trunk", 2)


def test_zoo_build_command(trunk_run, tiny_config, tmp_path, capsys):
    from hfsoup.cli import main

    out, _ = trunk_run
    # a missing config: exactly one error line, exit 2
    assert main(["zoo", "build", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "z")]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("hfsoup: error: no zoo config at")
    assert "Traceback" not in captured.err
    # --dry-run lists the missing steps, writes nothing
    assert main(["zoo", "build", "--config", str(tiny_config), "--out", str(tmp_path / "z"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["zoo build: 5 of 5 steps to run in '" + str(tmp_path / "z") + "'", "trunk 2",
                     "branch 2 1", "branch 2 2", "branch 2 3", "branch 2 4"]
    assert not (tmp_path / "z").exists()
    # the same through python -m hfsoup.train build
    from hfsoup.cli.train import main as train_main

    assert train_main(["build", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "z")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_zoo_build_runs_the_missing_steps(trunk_run, tiny_config, tmp_path):
    import shutil

    from hfsoup.zoo.build import build
    from hfsoup.zoo.config import load_config

    out, _ = trunk_run
    cfg = load_config(tiny_config)
    z = tmp_path / "zoo"
    shutil.copytree(out / "state" / "trunk" / "e002", z / "state" / "trunk" / "e002")
    shutil.copytree(out / "trunk" / "e002", z / "trunk" / "e002")
    lines = []
    res = build(cfg, z, cpu=True, progress=False, max_steps=1, log=lines.append)
    assert res.steps == [("branch", 2, k) for k in (1, 2, 3, 4)] and len(res.done) == 1
    assert (z / "branches" / "b002-v1" / "model.safetensors").is_file()
    assert not (z / "branches" / "b002-v2").exists()
    d = res.to_dict()
    assert d["done"][0]["step"] == ["branch", 2, 1] and d["total"] == 5 and d["dry_run"] is False
    assert d["done"][0]["best_epoch"] == _meta(z / "branches" / "b002-v1")["best_epoch"]
    assert lines[0] == f"zoo build: 4 of 5 steps to run in '{z}'" and lines[1].startswith("  branch b002-v1: ")


def test_two_cpu_processes_make_one_run(tiny_config, tmp_path):
    out = tmp_path / "zoo"
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1",
               CUDA_VISIBLE_DEVICES="")  # CPU processes, also on a machine with GPUs
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
           "-m", "hfsoup.train", "trunk", "--config", str(tiny_config), "--out", str(out), "--until-epoch", "2",
           "-q", "--report", str(tmp_path / "report")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"report.rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in reports] == [2, 2]
    assert reports[0]["state_sha256"] == reports[1]["state_sha256"]  # the same model on both ranks
    from hfsoup.zoo.trainer import state_hash

    assert state_hash(_weights(out / "trunk" / "e002")) == reports[0]["state_sha256"]
    assert sorted(p.name for p in (out / "trunk").iterdir()) == ["e001", "e002"]  # one set of outputs
    assert _meta(out / "trunk" / "e002")["num_processes"] == 2
    lines = (out / "logs" / "trunk.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # one writer


def test_branch_resume_after_kill_is_bit_identical(trunk_run, tiny_config, tmp_path):
    import shutil

    from hfsoup.zoo.config import load_config
    from hfsoup.zoo.loops import train_branch

    out, _ = trunk_run
    cfg = load_config(tiny_config)
    zoos = []
    for name in ("a", "b"):
        z = tmp_path / name
        shutil.copytree(out / "state" / "trunk" / "e002", z / "state" / "trunk" / "e002")
        zoos.append(z)
    train_branch(cfg, zoos[0], 2, 1, cpu=True, progress=False)
    killed = train_branch(cfg, zoos[1], 2, 1, cpu=True, progress=False, stop_after_epoch=3)
    assert killed.stopped and killed.epoch == 3 and killed.state_sha256 is None
    assert not (zoos[1] / "branches" / "b002-v1").exists()
    assert (zoos[1] / "state" / "branches" / "b002-v1" / "state.pt").is_file()
    train_branch(cfg, zoos[1], 2, 1, cpu=True, progress=False)
    a, b = (_weights(z / "branches" / "b002-v1") for z in zoos)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _meta(zoos[0] / "branches" / "b002-v1")["best_epoch"] == _meta(zoos[1] / "branches" / "b002-v1")["best_epoch"]
