"""SWA baseline: export + metadata, the average is the mean of the per-epoch weights, BN statistics recomputed,
exact resume, the command line and two CPU processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import folder_metadata as _meta, folder_weights as _weights, write_parquet_dataset

SWA_META = {"kind", "swa_start_epoch", "epoch", "swa_lr", "swa_anneal_epochs", "swa_anneal_strategy", "swa_epochs",
            "epochs_averaged", "lr_at_start", "seed", "data_seed", "momentum", "weight_decay", "val_accuracy",
            "val_loss", "test_accuracy", "test_loss", "dataset", "dataset_revision", "architecture", "parent",
            "library_versions", "bn_update", "recipe_sha256"}


@pytest.fixture(scope="module")
def swa_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("swa")
    data = write_parquet_dataset(root / "data", n_train=68, n_test=16, num_classes=10)
    cfg = {"data": {"dataset": str(data), "num_classes": 10},
           "optim": {"t_max": 4},
           "train": {"architecture": "resnet10_cifar_nano", "epochs": 4, "batch_size": 16, "checkpoint_interval": 1,
                     "eval_batch_size": 64},
           "branches": {"epochs": [2]},
           "swa": {"start_epoch": 2, "epochs": 2, "lr": 0.05, "anneal_epochs": 1}}
    path = root / "zoo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trunk2(swa_config, tmp_path_factory):
    from hfsoup.zoo.config import load_config
    from hfsoup.zoo.loops import train_trunk

    out = tmp_path_factory.mktemp("runs") / "zoo"
    train_trunk(load_config(swa_config), out, until_epoch=2, cpu=True, progress=False)
    return out


def _zoo_with_trunk_state(trunk: Path, z: Path, epoch: int = 2) -> Path:
    shutil.copytree(trunk / "state" / "trunk" / f"e{epoch:03d}", z / "state" / "trunk" / f"e{epoch:03d}")
    return z


def test_config_swa_section_defaults(tmp_path):
    from hfsoup.zoo.config import ConfigError, ZooConfig, config_from_dict, init_config, load_config

    cfg = load_config(init_config(tmp_path / "zoo.yaml"))
    assert cfg.swa == ZooConfig().swa
    w = cfg.swa
    assert (w.start_epoch, w.epochs, w.lr, w.anneal_epochs, w.anneal_strategy, w.bn_augment) == \
        (220, 80, 0.05, 10, "cos", True)
    # SWA settings are not part of the trunk recipe: adding/changing them keeps existing zoo folders valid
    assert config_from_dict({"swa": {"lr": 0.01}}).recipe_hash() == ZooConfig().recipe_hash()
    with pytest.raises(ConfigError):
        config_from_dict({"swa": {"anneal_strategy": "step"}})
    with pytest.raises(ConfigError):
        config_from_dict({"swa": {"bogus": 1}})


def test_swa_export_average_and_bn(trunk2, swa_config, tmp_path):
    from torch.optim.swa_utils import update_bn

    from hfsoup.zoo.config import load_config
    from hfsoup.zoo.swa import bn_batches, bn_seed, train_swa
    from hfsoup.zoo.trainer import Trainer, state_hash

    cfg = load_config(swa_config)
    out = trunk2
    seen = []
    t = Trainer(cfg, out, cpu=True, progress=False)
    res = train_swa(cfg, out, 2, trainer=t,
                    callback=lambda e, net: seen.append((e, {k: v.detach().clone()
                                                             for k, v in net.state_dict().items()})))
    folder = out / "swa" / "e002"
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    assert not (out / "state" / "swa" / "e002").exists()  # state removed once exported
    meta = _meta(folder)
    assert SWA_META <= set(meta), SWA_META - set(meta)
    assert meta["kind"] == "swa" and meta["swa_start_epoch"] == 2 and meta["epoch"] == 4
    assert meta["parent"] == "trunk/e002" and meta["epochs_averaged"] == 2 == meta["swa_epochs"]
    assert meta["swa_lr"] == pytest.approx(0.05) and meta["seed"] == 42 and meta["data_seed"] == 42
    assert meta["parent_test_accuracy"] == _meta(out / "trunk" / "e002")["test_accuracy"]
    assert meta["test_accuracy"] == res.test["accuracy"] and meta["val_loss"] == res.val["loss"]
    assert res.kind == "swa" and res.name == "swa-e002" and res.epoch == 4 and res.epochs_averaged == 2
    assert json.loads((folder / "config.json").read_text())["num_classes"] == 10
    # schedule: the first SWA epoch runs at the trunk's lr of epoch 3, annealed to swa_lr after anneal_epochs=1
    trunk_lr = torch.load(out / "state" / "trunk" / "e002" / "state.pt", weights_only=False)["optimizer"][
        "param_groups"][0]["lr"]
    log = [json.loads(line) for line in (out / "logs" / "swa-e002.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [3, 4] and [r["n_averaged"] for r in log] == [1, 2]
    assert log[0]["lr"] == pytest.approx(trunk_lr) and meta["lr_at_start"] == pytest.approx(trunk_lr)
    assert log[1]["lr"] == pytest.approx(0.05)

    # the exported parameters are the mean of the weights after each SWA epoch
    assert [e for e, _ in seen] == [3, 4]
    w = _weights(folder)
    net = t.acc.unwrap_model(t.build()[0])
    params = {k for k, _ in net.named_parameters()}
    buffers = {k for k, _ in net.named_buffers()}
    assert params and set(w) == params | buffers
    for k in params:
        mean = (seen[0][1][k] + seen[1][1][k]) / 2
        assert torch.allclose(w[k], mean, atol=1e-6), k
        assert not torch.equal(seen[0][1][k], seen[1][1][k]) or k.endswith("num_batches_tracked")
    # BN statistics were recomputed: neither the plain average of the per-epoch buffers nor the last epoch's
    stats = [k for k in buffers if k.endswith("running_mean") or k.endswith("running_var")]
    assert stats
    for k in stats:
        assert not torch.allclose(w[k], (seen[0][1][k] + seen[1][1][k]) / 2), k
        assert not torch.allclose(w[k], seen[1][1][k]), k
    # ...and they are exactly what update_bn gives for the averaged parameters over train-main
    net.load_state_dict(w)
    update_bn(bn_batches(t, bn_seed(cfg, 2), augment=True), net)
    assert all(torch.equal(net.state_dict()[k], w[k]) for k in stats)
    assert state_hash(w) == res.state_sha256
    # the exported scores are hfsoup's evaluation of the folder
    from hfsoup.data.images import load_image_data
    from hfsoup.eval.metrics import evaluate_model
    from hfsoup.core.ingredients import load_ingredient

    test = load_image_data(cfg.data.dataset, "test", progress=False)
    r = evaluate_model(load_ingredient(str(folder)).create_model(), test, progress=False)
    assert meta["test_accuracy"] == pytest.approx(r.accuracy)


def test_swa_resume_after_kill_is_bit_identical(trunk2, swa_config, tmp_path):
    from hfsoup.cli.train import main
    from hfsoup.zoo.config import load_config
    from hfsoup.zoo.swa import train_swa

    cfg = load_config(swa_config)
    a, b = (_zoo_with_trunk_state(trunk2, tmp_path / n) for n in ("a", "b"))
    train_swa(cfg, a, 2, cpu=True, progress=False)
    # the command line, "killed" after the first SWA epoch, then rerun
    argv = ["swa", "--config", str(swa_config), "--out", str(b), "--epoch", "2", "--cpu", "-q"]
    assert main(argv + ["--stop-after-epoch", "3"]) == 0
    assert not (b / "swa" / "e002").exists()
    st = torch.load(b / "state" / "swa" / "e002" / "state.pt", weights_only=False)
    assert st["epoch"] == 3 and int(st["swa_model"]["n_averaged"]) == 1
    assert main(argv) == 0
    wa, wb = _weights(a / "swa" / "e002"), _weights(b / "swa" / "e002")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _meta(b / "swa" / "e002")["epochs_averaged"] == 2
    lines = (b / "logs" / "swa-e002.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [3, 4]


def test_swa_refuses_missing_trunk_state_and_changed_settings(swa_config, trunk2, tmp_path, capsys):
    from hfsoup.cli.train import main
    from hfsoup.errors import HfSoupError
    from hfsoup.zoo.config import load_config
    from hfsoup.zoo.swa import train_swa

    assert main(["swa", "--config", str(swa_config), "--out", str(tmp_path / "empty"), "--cpu", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hfsoup: error: no trunk state for epoch 2") and err.count("\n") == 1
    cfg = load_config(swa_config)
    z = _zoo_with_trunk_state(trunk2, tmp_path / "z")
    killed = train_swa(cfg, z, 2, cpu=True, progress=False, stop_after_epoch=3)
    assert killed.stopped and killed.epoch == 3
    cfg.swa.lr = 0.01
    with pytest.raises(HfSoupError, match="other SWA settings"):
        train_swa(cfg, z, 2, cpu=True, progress=False)


def test_swa_two_cpu_processes_make_one_run(trunk2, swa_config, tmp_path):
    out = _zoo_with_trunk_state(trunk2, tmp_path / "zoo")
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1",
               CUDA_VISIBLE_DEVICES="")  # CPU processes, also on a machine with GPUs
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531",
           "-m", "hfsoup.train", "swa", "--config", str(swa_config), "--out", str(out), "--epoch", "2",
           "-q", "--report", str(tmp_path / "report")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"report.rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in reports] == [2, 2]
    assert reports[0]["state_sha256"] == reports[1]["state_sha256"]
    from hfsoup.zoo.trainer import state_hash

    assert state_hash(_weights(out / "swa" / "e002")) == reports[0]["state_sha256"]
    assert _meta(out / "swa" / "e002")["num_processes"] == 2
    lines = (out / "logs" / "swa-e002.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [3, 4]  # one writer
