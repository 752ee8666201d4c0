"""Zoo training: exported checkpoints and metadata, exact resume, branch hyperparameters, two CPU processes."""

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




@pytest.fixture(scope="module")
def trunk_run(tiny_config, tmp_path_factory):
    from hfsoup.zoo.train import train_trunk
    from hfsoup.zoo.config import load_config

    out = tmp_path_factory.mktemp("runs") / "zoo"
    res = train_trunk(load_config(tiny_config), out, cpu=True, progress=False)
    return out, res


def test_config_defaults_are_the_paper_recipe(tmp_path):
    from hfsoup.errors import OutputExistsError
    from hfsoup.zoo.config import PAPER_VARIANTS, ZooConfig, init_config, load_config

    path = init_config(tmp_path / "zoo.yaml")
    cfg = load_config(path)
    assert cfg.to_dict() == ZooConfig().to_dict()
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.t_max) == (0.1, 0.9, 5e-4, 280)
    assert cfg.train.epochs == 300 and cfg.train.batch_size == 128 and cfg.train.seed == 42
    assert cfg.branches.epochs == list(range(50, 301, 10)) and cfg.branches.variants == PAPER_VARIANTS
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
    from hfsoup.zoo.train import state_hash

    assert state_hash(_weights(out / "trunk" / "e003")) == res["state_sha256"]
    # the exported scores are what hfsoup's evaluation reports for the same folder
    from hfsoup.data.images import load_image_data
    from hfsoup.eval.metrics import evaluate_model
    from hfsoup.core.ingredients import load_ingredient

    cfg = yaml.safe_load(tiny_config.read_text())
    test = load_image_data(cfg["data"]["dataset"], "test", progress=False)
    r = evaluate_model(load_ingredient(str(out / "trunk" / "e003")).create_model(), test, progress=False)
    assert _meta(out / "trunk" / "e003")["test_accuracy"] == pytest.approx(r.accuracy)


def test_resume_after_kill_is_bit_identical(trunk_run, tiny_config, tmp_path):
    from hfsoup.zoo.train import train_trunk
    from hfsoup.zoo.config import load_config

    out, _ = trunk_run
    cfg = load_config(tiny_config)
    other = tmp_path / "zoo"
    train_trunk(cfg, other, cpu=True, progress=False, stop_after_epoch=1)  # "killed" after epoch 1
    assert not (other / "trunk" / "e002").exists()
    res = train_trunk(cfg, other, cpu=True, progress=False)  # resumes from state/trunk/e001
    assert res["epoch"] == 3
    a, b = _weights(out / "trunk" / "e003"), _weights(other / "trunk" / "e003")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_branch_scales_hyperparameters(trunk_run, tiny_config):
    from hfsoup.zoo.train import Trainer, train_branch
    from hfsoup.zoo.config import PAPER_VARIANTS, load_config

    out, _ = trunk_run
    cfg = load_config(tiny_config)
    trunk_state = torch.load(out / "state" / "trunk" / "e002" / "state.pt", weights_only=False)
    trunk_lr = trunk_state["optimizer"]["param_groups"][0]["lr"]
    t = Trainer(cfg, out, cpu=True, progress=False)
    res = train_branch(cfg, out, 2, 2, trainer=t)
    s = PAPER_VARIANTS[2]
    g = t.optimizer_view.param_groups[0]
    assert g["momentum"] == pytest.approx(0.9 * s["momentum_scale"])
    assert g["weight_decay"] == pytest.approx(5e-4 * s["weight_decay_scale"])
    assert g["initial_lr"] == pytest.approx(0.1 * s["lr_scale"])
    meta = _meta(out / "branches" / "b002-v2")
    assert REQUIRED_META <= set(meta)
    assert meta["kind"] == "branch" and meta["branch_epoch"] == 2 and meta["variant"] == 2
    assert meta["parent"] == "trunk/e002" and meta["data_seed"] == 42 + 1000 * 2 + 2
    assert meta["lr"] == pytest.approx(0.1 * s["lr_scale"]) and meta["lr_scale"] == s["lr_scale"]
    assert meta["momentum"] == pytest.approx(0.9 * s["momentum_scale"])
    assert meta["weight_decay"] == pytest.approx(5e-4 * s["weight_decay_scale"])
    # the first branch epoch ran with the trunk's lr at epoch 2, scaled
    log = [json.loads(line) for line in (out / "logs" / "b002-v2.jsonl").read_text().splitlines()]
    assert log[0]["epoch"] == 3 and log[0]["lr"] == pytest.approx(trunk_lr * s["lr_scale"])
    assert res["best_epoch"] in (3, 4) and not (out / "state" / "branches" / "b002-v2").exists()


def test_zoo_build_plan_is_resumable(trunk_run, tiny_config):
    from hfsoup.zoo.build import plan
    from hfsoup.zoo.config import load_config

    out, _ = trunk_run
    cfg = load_config(tiny_config)
    steps = plan(cfg, out)
    assert ("trunk", 2) not in steps  # the trunk has every branch epoch already
    assert all(s[0] == "branch" for s in steps)


def test_two_cpu_processes_make_one_run(tiny_config, tmp_path):
    out = tmp_path / "zoo"
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
           "-m", "hfsoup.train", "trunk", "--config", str(tiny_config), "--out", str(out), "--until-epoch", "2",
           "-q", "--report", str(tmp_path / "report")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"report.rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in reports] == [2, 2]
    assert reports[0]["state_sha256"] == reports[1]["state_sha256"]  # the same model on both ranks
    from hfsoup.zoo.train import state_hash

    assert state_hash(_weights(out / "trunk" / "e002")) == reports[0]["state_sha256"]
    assert sorted(p.name for p in (out / "trunk").iterdir()) == ["e001", "e002"]  # one set of outputs
    assert _meta(out / "trunk" / "e002")["num_processes"] == 2
    lines = (out / "logs" / "trunk.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # one writer


def test_branch_resume_after_kill_is_bit_identical(trunk_run, tiny_config, tmp_path):
    import shutil

    from hfsoup.zoo.train import train_branch
    from hfsoup.zoo.config import load_config

    out, _ = trunk_run
    cfg = load_config(tiny_config)
    zoos = []
    for name in ("a", "b"):
        z = tmp_path / name
        shutil.copytree(out / "state" / "trunk" / "e002", z / "state" / "trunk" / "e002")
        zoos.append(z)
    train_branch(cfg, zoos[0], 2, 1, cpu=True, progress=False)
    assert train_branch(cfg, zoos[1], 2, 1, cpu=True, progress=False, stop_after_epoch=3) == {"stopped": 3}
    assert not (zoos[1] / "branches" / "b002-v1").exists()
    assert (zoos[1] / "state" / "branches" / "b002-v1" / "state.pt").is_file()
    train_branch(cfg, zoos[1], 2, 1, cpu=True, progress=False)
    a, b = (_weights(z / "branches" / "b002-v1") for z in zoos)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _meta(zoos[0] / "branches" / "b002-v1")["best_epoch"] == _meta(zoos[1] / "branches" / "b002-v1")["best_epoch"]
