"""``hfsoup study run``: the soup built on the device equals the averaging engine bit for bit, every row equals
``hfsoup mix … --eval-split test`` of its pair, a run killed with SIGKILL and rerun gives the uninterrupted table,
two CPU processes under ``accelerate launch`` and two ``--shard`` jobs give the one-process table, bad input is one
line with nothing written, ``study status`` and ``study push``.

Everything runs on the embedded mini-zoo (``resnet10_cifar_nano`` on scikit-learn digits) with a few test images,
on the CPU in fp32, pinned (``--device cpu --precision fp32``): the equalities with ``hfsoup mix`` are exact there. On
a machine with a GPU, or a CPU with native bf16, ``--precision auto`` may pick bf16 after its check, and a study and
``hfsoup mix`` each decide on their own first model: then they need not agree to the last bit.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from conftest import make_model, save_model_dir

import hfsoup

ZOO = Path(hfsoup.__file__).resolve().parent / "assets" / "mini_zoo"
BRANCHES = ZOO / "branches"
LIMIT = 16
#: 4 models (branch epoch 16), 6 pairs, 3 α: 18 rows.
STUDY_ARGS = ["--dataset", "sklearn:digits", "--limit", str(LIMIT), "--epochs", "16", "--alphas", "0.25,0.5,0.75",
              "--device", "cpu", "--precision", "fp32"]
NUM_ROWS = 18
REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = {**os.environ, "HFSOUP_NO_PROGRESS": "1", "TQDM_DISABLE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _config(out: Path, sources=None, **kw):
    from hfsoup.study.run import StudyConfig

    base = dict(sources=[str(ZOO)] if sources is None else [str(s) for s in sources], out=out,
                dataset="sklearn:digits", limit=LIMIT, epochs="16", alphas=[0.25, 0.5, 0.75], progress=False,
                device="cpu", precision="fp32")
    base.update(kw)
    return StudyConfig(**base)


@pytest.fixture(autouse=True)
def _fp32_evaluations():
    """The tests' own evaluations (``hfsoup.mix`` + ``evaluate_soup``, ``predict_logits``, ``evaluate_model``) in
    fp32 too, as the study's: ``auto`` would check for bf16 on a CPU with native bf16 (AMX, AVX-512 BF16)."""
    from hfsoup.eval.precision import use_precision

    with use_precision("fp32"):
        yield


def _run(out: Path, sources=None, **kw):
    from hfsoup.study.run import run_study

    return run_study(_config(out, sources, **kw))


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _timeless_bytes(path: Path, tmp: Path) -> bytes:
    """The table's parquet bytes with ``finished_at`` (the only wall-clock column) set to null."""
    from hfsoup.study.store import write_table
    from hfsoup.study.table import PAIR_COLUMNS, PAIR_TYPES

    rows = [{**r, "finished_at": None} for r in _rows(path)]
    target = tmp / f"timeless-{path.parent.name}-{time.monotonic_ns()}.parquet"
    write_table(target, rows, order_by=("row_id",), leading=PAIR_COLUMNS, types=PAIR_TYPES)
    return target.read_bytes()


def _assert_same_table(a: Path, b: Path, tmp: Path) -> None:
    ra, rb = _rows(a / "pairs.parquet"), _rows(b / "pairs.parquet")
    assert len(ra) == len(rb) == len({r["row_id"] for r in ra})
    assert [{k: v for k, v in r.items() if k != "finished_at"} for r in ra] == \
           [{k: v for k, v in r.items() if k != "finished_at"} for r in rb]
    assert _timeless_bytes(a / "pairs.parquet", tmp) == _timeless_bytes(b / "pairs.parquet", tmp)
    assert (a / "models.parquet").read_bytes() == (b / "models.parquet").read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted one-process run of STUDY_ARGS (in process)."""
    out = tmp_path_factory.mktemp("study") / "reference"
    result = _run(out)
    assert result.computed == NUM_ROWS and result.failed == 0 and result.merged
    return out


# ------------------------------------------------------------------------------------------------ the soup
def _nan_model_dir(path: Path) -> Path:
    from hfsoup.hub.format import save_model

    model = make_model(7, num_classes=10)
    with torch.no_grad():
        model.conv1.weight[0, 0, 0, 0] = float("nan")
    return save_model(model, path, metadata={"seed": 7})


def test_device_soup_equals_the_averaging_engine_bit_for_bit(tmp_path):
    from hfsoup.core.averaging import average
    from hfsoup.core.ingredients import load_ingredients
    from hfsoup.core.models import build_model
    from hfsoup.study.engine import SoupBuilder, WeightBank

    # float32 models with populated BN buffers (and num_batches_tracked 1 vs 3), and float16 mini-zoo models.
    for refs in ([save_model_dir(tmp_path / "a", seed=1, bn_steps=1), save_model_dir(tmp_path / "b", seed=2,
                                                                                          bn_steps=3)],
                 [BRANCHES / "b008-v1", BRANCHES / "b016-v3"]):
        ings = load_ingredients(refs)
        bank = WeightBank(ings, torch.device("cpu"))
        for fused in (False, True):  # tensor by tensor (the CPU path) and whole buffers (the CUDA path)
            model = build_model(ings[0].config, None)
            for policy, alphas in (("mean", (0.0, 0.1, 1 / 3, 0.5, 0.9, 1.0)), ("max", (0.3,)), ("first", (0.7,))):
                builder = SoupBuilder(bank, model, integer_policy=policy, fused=fused)
                for alpha in alphas:
                    assert bool(builder.build(0, 1, alpha))
                    expected = average(ings, [1 - alpha, alpha], integer_policy=policy)
                    got = builder.state_dict()
                    assert got.keys() == expected.keys()
                    for key, value in expected.items():
                        assert got[key].dtype == value.dtype and torch.equal(got[key], value), (fused, alpha, key)
            # The preallocated model holds what load_state_dict of those tensors gives.
            loaded = build_model(ings[0].config, expected).state_dict()
            for key, value in model.state_dict().items():
                assert torch.equal(value, loaded[key]), (fused, key)
            builder.load_model(1)
            assert all(torch.equal(v, ings[1].state_dict()[k]) for k, v in builder.state_dict().items())


def test_nonfinite_soup_is_recorded_failed_once(tmp_path):
    good = save_model_dir(tmp_path / "good", seed=3, num_classes=10)
    bad = _nan_model_dir(tmp_path / "bad")
    out = tmp_path / "study"
    first = _run(out, [good, bad], epochs=None, alphas=[0.5])
    assert (first.computed, first.failed) == (1, 1)
    (row,) = _rows(out / "pairs.parquet")
    assert row["status"] == "failed" and "non-finite" in row["error"] and row["soup_acc"] is None
    assert row["l2"] is None and row["kl"] is None  # NaN similarity is stored as null
    assert {row["acc_a"] is None, row["acc_b"] is None} == {False}
    again = _run(out, [good, bad], epochs=None, alphas=[0.5])
    assert (again.computed, again.done_before) == (0, 1)  # not retried forever
    retried = _run(out, [good, bad], epochs=None, alphas=[0.5], retry_failed=True)
    assert (retried.computed, retried.failed) == (1, 1)
    assert len(_rows(out / "pairs.parquet")) == 1


# ------------------------------------------------------------------------------------ equality with `mix`
def test_every_row_equals_hfsoup_mix_of_its_pair(reference):
    from hfsoup.data.images import load_image_data
    from hfsoup.eval.metrics import predict_logits
    from hfsoup.study.similarity import output_similarity, weight_similarity

    data = load_image_data("sklearn:digits", "test", limit=LIMIT, progress=False)
    rows = _rows(reference / "pairs.parquet")
    assert len(rows) == NUM_ROWS and all(r["status"] == "ok" for r in rows)
    assert {r["alpha"] for r in rows} == {0.25, 0.5, 0.75}
    assert {(r["epoch_a"], r["epoch_b"], r["shared_epochs"]) for r in rows} == {(16, 16, 16)}
    logits, feats = {}, {}
    # Every pair at α = 0.5, and two rows of the other α (a forward pass costs on 2 cores).
    checked = [r for r in rows if r["alpha"] == 0.5] + [r for r in rows if r["alpha"] != 0.5][:2]
    for row in checked:
        a, b = BRANCHES / row["model_a"], BRANCHES / row["model_b"]
        soup = hfsoup.mix(a, b, row["alpha"])
        res = hfsoup.evaluate_soup(soup, data, progress=False, device="cpu", batch_size=500)
        ra, rb = (res.models[ing.reference] for ing in soup.ingredients)
        assert (row["soup_acc"], row["soup_loss"]) == (res.soup.accuracy, res.soup.loss)
        assert (row["acc_a"], row["loss_a"], row["acc_b"], row["loss_b"]) == (ra.accuracy, ra.loss, rb.accuracy,
                                                                                rb.loss)
        assert (row["acc_gain"], row["loss_gain"], row["collapsed"]) == (
            res.gain["accuracy_gain"], res.gain["loss_gain"], res.gain["collapsed"])
        assert row["sha_a"] == soup.ingredients[0].sha256 and row["sha_b"] == soup.ingredients[1].sha256
        # Similarity: weight space against the streamed state dicts, output space against predict_logits.
        sa, sb = (ing.state_dict() for ing in soup.ingredients)
        w = weight_similarity((k, sa[k], sb[k]) for k in sa)
        assert row["l2"] == pytest.approx(w.l2, rel=1e-12) and row["cosine"] == pytest.approx(w.cosine, rel=1e-12)
        for ing in soup.ingredients:
            if ing.sha256 not in logits:
                model = ing.create_model()
                logits[ing.sha256] = predict_logits(model, data, progress=False, device="cpu")
                feats[ing.sha256] = predict_logits(model, data, progress=False, device="cpu", features=True)
        o = output_similarity(logits[row["sha_a"]], logits[row["sha_b"]], features_a=feats[row["sha_a"]],
                              features_b=feats[row["sha_b"]], labels=data.labels)
        assert (row["kl"], row["mse"], row["cka_logits"], row["cka_features"], row["disagreement"],
                row["ensemble_acc"]) == (o.kl, o.mse, o.cka_logits, o.cka_features, o.disagreement,
                                         o.ensemble_accuracy)
        assert row["c_soup_acc"] is None and row["c_severity"] is None
        assert row["test_fingerprint"] == data.fingerprint
    models = pq.read_table(reference / "models.parquet").to_pylist()
    assert [m["name"] for m in models] == ["b016-v1", "b016-v2", "b016-v3", "b016-v4"]
    assert all(m["kind"] == "branch" and m["epoch"] == 16 for m in models)


def test_a_row_equals_the_mix_cli_json(reference, capsys):
    from hfsoup.cli import main

    row = next(r for r in _rows(reference / "pairs.parquet") if r["alpha"] == 0.5)
    rc = main(["mix", str(BRANCHES / row["model_a"]), str(BRANCHES / row["model_b"]), "--alpha", "0.5",
               "--eval-split", "test", "--dataset", "sklearn:digits", "--limit", str(LIMIT), "--no-save", "--json",
               "-q", "--device", "cpu", "--precision", "fp32"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    test = doc["soups"][0]["results"]["test"]
    assert (row["soup_acc"], row["soup_loss"]) == (test["accuracy"], test["loss"])
    assert (row["acc_gain"], row["loss_gain"]) == (test["gain"]["accuracy_gain"], test["gain"]["loss_gain"])
    ings = {i["sha256"]: i["results"]["test"] for i in doc["ingredients"]}
    assert (row["acc_a"], row["loss_a"]) == (ings[row["sha_a"]]["accuracy"], ings[row["sha_a"]]["loss"])


# ------------------------------------------------------------------------------ resumable, exactly once
def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_table(reference, tmp_path, capsys):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hfsoup", "study", "run", str(ZOO), *STUDY_ARGS, "--out", str(out), "-q"]
    shard = out / "shards" / "part-00000-of-00001.jsonl"
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if shard.is_file() and shard.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-500:]!r}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    written = shard.read_bytes().count(b"\n")
    assert 3 <= written < NUM_ROWS and not (out / "pairs.parquet").exists()

    from hfsoup.cli import main

    assert main(["study", "status", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["total"], doc["failed"]) == (NUM_ROWS, 0) and doc["done"] >= 3
    assert doc["done"] + doc["remaining"] == NUM_ROWS

    assert main(cmd[3:] + ["--json"]) == 0  # the rerun: the same command (in process, to save an import of torch)
    result = json.loads(capsys.readouterr().out)
    assert result["done_before"] == doc["done"] and result["computed"] == NUM_ROWS - doc["done"]
    assert result["table_rows"] == NUM_ROWS
    _assert_same_table(out, reference, tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_under_accelerate_launch_give_the_one_process_table(reference, tmp_path):
    out = tmp_path / "accelerate"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "hfsoup.study", "run", str(ZOO), *STUDY_ARGS,
           "--out", str(out), "--json"]
    proc = subprocess.run(cmd, env={**_env(), "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shards = sorted(p.name for p in (out / "shards").iterdir())
    assert shards == ["part-00000-of-00002.jsonl", "part-00001-of-00002.jsonl"]
    counts = [(out / "shards" / s).read_bytes().count(b"\n") for s in shards]
    assert sum(counts) == NUM_ROWS and all(counts)  # split by id, no padding duplicates
    report = json.loads(proc.stdout[proc.stdout.index("{"):])  # only the main process reports
    assert report["table_rows"] == NUM_ROWS and report["shard"] == [0, 2]
    _assert_same_table(out, reference, tmp_path)


def test_shard_jobs_then_merge_give_the_full_table(reference, tmp_path, capsys):
    from hfsoup.cli import main

    out = tmp_path / "sharded"
    first = _run(out, shard=(0, 2))
    second = _run(out, shard=(1, 2))
    assert not first.merged and not second.merged and not (out / "pairs.parquet").exists()
    assert first.computed + second.computed == NUM_ROWS and first.computed and second.computed
    assert first.cache_misses == 0  # the per-model outputs of the reference run are reused
    assert main(["study", "status", str(out), "--merge", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["done"], doc["remaining"], doc["failed"]) == (NUM_ROWS, 0, 0)
    assert doc["per_shard"] == {"part-00000-of-00002": first.computed, "part-00001-of-00002": second.computed}
    _assert_same_table(out, reference, tmp_path)
    assert _run(out).computed == 0  # a later plain run finds everything done


# ------------------------------------------------------------------------------------------ inputs, pairs
def test_pairs_file_filters_and_names(tmp_path):
    from hfsoup.study.run import plan_study

    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# curves of two pairs\nb016-v3 b008-v1\n\n" + f"{BRANCHES / 'b004-v2'} b016-v3  # a path\n")
    plan = plan_study(_config(tmp_path / "p", epochs=None, alphas=[0, 0.5, 1], pairs_file=pairs))
    names = [(plan.models[p.a].name, plan.models[p.b].name) for p in plan.pairs]
    assert names == [("b016-v3", "b008-v1"), ("b004-v2", "b016-v3")]  # the order written: α weighs the second
    assert len(plan.rows) == 6 and len({r.row_id for r in plan.rows}) == 6
    assert not (tmp_path / "p").exists()  # planning writes nothing
    plan = plan_study(_config(tmp_path / "p", epochs="4-8", variants="1,2", kinds="all", alphas=[0.5]))
    # Trunk checkpoints have no variant: --variants drops them, as it does in `hfsoup zoo pull`.
    assert sorted(m.name for m in plan.models) == ["b004-v1", "b004-v2", "b008-v1", "b008-v2"]
    plan = plan_study(_config(tmp_path / "p", epochs="4-8", kinds="all", alphas=[0.5]))
    assert sorted(m.name for m in plan.models)[-2:] == ["trunk-e004", "trunk-e008"]
    assert {m.kind for m in plan.models} == {"trunk", "branch"} and len(plan.models) == 10
    assert len(plan.pairs) == len(plan.models) * (len(plan.models) - 1) // 2
    # Unordered pairs are ordered by weight hash: the ids do not depend on the order the models are listed in.
    refs = [BRANCHES / "b016-v1", BRANCHES / "b016-v2", BRANCHES / "b016-v3"]
    ids = {r.row_id for r in plan_study(_config(tmp_path / "q", refs, epochs=None)).rows}
    assert ids == {r.row_id for r in plan_study(_config(tmp_path / "q", refs[::-1], epochs=None)).rows}


def test_pulled_zoo_folder_uses_the_manifest(tmp_path):
    import shutil

    from hfsoup.core.ingredients import sha256_file
    from hfsoup.study.inputs import StudyInputError, resolve_models

    folder = tmp_path / "pulled"
    entries = []
    for k, (epoch, variant) in enumerate([(8, 1), (16, 2)]):
        name = f"resnet50-cifar100-b{epoch:03d}-v{variant}"
        shutil.copytree(BRANCHES / f"b{epoch:03d}-v{variant}", folder / name)
        entries.append({"repo_id": f"org/{name}", "commit": f"{k + 1}" * 40, "kind": "branch",
                        "branch_epoch": epoch, "variant": variant,
                        "files": {"model.safetensors": sha256_file(folder / name / "model.safetensors")}})
    entries.append({**entries[0], "repo_id": "org/not-pulled"})  # listed, not downloaded: skipped
    (folder / "zoo.json").write_text(json.dumps({"format": 1, "models": entries}))
    sel = resolve_models([folder])
    assert sel.source_kind == "manifest"
    assert [(m.name, m.repo, m.commit, m.epoch, m.variant) for m in sel.models] == [
        ("b008-v1", "org/resnet50-cifar100-b008-v1", "1" * 40, 8, 1),
        ("b016-v2", "org/resnet50-cifar100-b016-v2", "2" * 40, 16, 2)]
    entries[1]["files"]["model.safetensors"] = "0" * 64
    (folder / "zoo.json").write_text(json.dumps({"format": 1, "models": entries[:2]}))
    with pytest.raises(StudyInputError, match="does not match the manifest"):
        resolve_models([folder])

    # A built zoo (trunk/, branches/) after `hfsoup zoo push` has its zoo.json at the root: the published repos and
    # commits are recorded for the models whose weights are the published ones.
    built = tmp_path / "built"
    for name in ("b008-v1", "b016-v2"):
        shutil.copytree(BRANCHES / name, built / "branches" / name)
    (built / "zoo.json").write_text(json.dumps({"format": 1, "models": entries[:2]}))
    sel = resolve_models([built])
    assert sel.source_kind == "zoo"
    assert [(m.name, m.repo, m.commit) for m in sel.models] == [
        ("b008-v1", "org/resnet50-cifar100-b008-v1", "1" * 40), ("b016-v2", None, None)]  # b016-v2: sha differs


def test_hub_manifest_models_are_pinned_to_their_commits(hub, tmp_path):
    from huggingface_hub import HfApi

    from hfsoup.core.ingredients import sha256_file
    from hfsoup.hub.upload import upload_folder
    from hfsoup.study.run import plan_study

    entries = []
    for name in ("b004-v1", "b016-v3"):
        repo = f"my-org/resnet-nano-{name}"
        first = upload_folder(BRANCHES / name, repo).commit
        entries.append({"repo_id": repo, "commit": first, "kind": "branch", "branch_epoch": int(name[1:4]),
                        "variant": int(name[-1]),
                        "files": {"model.safetensors": sha256_file(BRANCHES / name / "model.safetensors")}})
    # A later commit on main must not be used: the study loads what the manifest pins.
    upload_folder(BRANCHES / "b008-v2", "my-org/resnet-nano-b004-v1")
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    (manifest / "zoo.json").write_text(json.dumps({"format": 1, "models": entries}))
    upload_folder(manifest, "my-org/hfsoup-zoo")
    plan = plan_study(_config(tmp_path / "out", ["my-org/hfsoup-zoo"], epochs=None, alphas=[0.5]))
    assert plan.selection.source_kind == "manifest"
    assert [(m.name, m.repo, m.commit, m.reference) for m in plan.models] == [
        (f"b{e['branch_epoch']:03d}-v{e['variant']}", e["repo_id"], e["commit"], f"{e['repo_id']}@{e['commit']}")
        for e in entries]
    assert [m.sha for m in plan.models] == [e["files"]["model.safetensors"] for e in entries]
    assert len(plan.rows) == 1 and not (tmp_path / "out").exists()
    assert HfApi(endpoint=hub.endpoint).repo_info("my-org/resnet-nano-b004-v1").sha != entries[0]["commit"]


def _no_test_split(root: Path) -> Path:
    from conftest import make_cifar_like

    (root / "data").mkdir(parents=True)
    make_cifar_like(8, num_classes=10).to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    return root


@pytest.mark.parametrize("case", ["one-model", "one-model-after-filter", "incompatible", "unknown-in-pairs",
                                  "no-test-split", "bad-alpha"])
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, capsys):
    from hfsoup.cli import main

    out = tmp_path / "out"
    argv = ["study", "run", str(ZOO), "--out", str(out), "--dataset", "sklearn:digits", "--limit", "8", "-q"]
    expect = {"one-model": "at least two models", "one-model-after-filter": "at least two models",
              "incompatible": "different", "unknown-in-pairs": "unknown model 'b999-v9'",
              "no-test-split": "no 'test' split", "bad-alpha": "alpha"}[case]
    if case == "one-model":
        argv[2] = str(BRANCHES / "b008-v1")
    elif case == "one-model-after-filter":
        argv += ["--epochs", "8", "--variants", "3"]
    elif case == "incompatible":
        other = save_model_dir(tmp_path / "tiny", seed=0, arch="resnet10_cifar_tiny", num_classes=10)
        argv[2:3] = [str(BRANCHES / "b008-v1"), str(other)]
    elif case == "unknown-in-pairs":
        (tmp_path / "pairs.txt").write_text("b008-v1 b016-v1\nb008-v1 b999-v9\n")
        argv += ["--pairs", str(tmp_path / "pairs.txt")]
    elif case == "no-test-split":
        argv[argv.index("sklearn:digits")] = str(_no_test_split(tmp_path / "trainonly"))
    elif case == "bad-alpha":
        argv += ["--alphas", "0.5,1.5"]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("hfsoup: error: ") and expect in err, err
    assert not out.exists()


# ------------------------------------------------------------------------------------- corrupted data
def test_corrupted_columns_are_the_mean_over_corruptions(tmp_path):
    from hfsoup.data.cifar100c import iter_corrupted
    from hfsoup.data.cifar100c_release import convert_release
    from hfsoup.data.images import load_image_data
    from hfsoup.eval.metrics import evaluate_model

    # A CIFAR-100-C-shaped release of the digits: 2 corruptions x 5 severities of the first test images.
    test = load_image_data("sklearn:digits", "test", limit=8, progress=False)
    images = test.images.permute(0, 2, 3, 1).numpy()
    folder = tmp_path / "CIFAR-100-C"
    folder.mkdir()
    np.save(folder / "labels.npy", np.tile(test.labels.numpy(), 5).astype(np.uint8))
    rng = np.random.default_rng(0)
    np.save(folder / "fog.npy", np.concatenate([np.clip(images.astype(int) // (s + 1) + 40 * s, 0, 255)
                                                for s in range(5)]).astype(np.uint8))
    np.save(folder / "gaussian_noise.npy", np.concatenate([
        np.clip(images + rng.normal(0, 20 * (s + 1), images.shape), 0, 255) for s in range(5)]).astype(np.uint8))
    conv = tmp_path / "c100c"
    convert_release(folder, conv, progress=False)

    refs = [BRANCHES / "b008-v1", BRANCHES / "b016-v2"]
    out = tmp_path / "study"
    _run(out, refs, epochs=None, limit=8, alphas=[0.5], corrupted_dataset=str(conv), severity=2,
         corruptions="fog,gaussian_noise")
    (row,) = _rows(out / "pairs.parquet")
    soup = hfsoup.mix(*refs, 0.5)
    per = {}
    for c, _, data in iter_corrupted(str(conv), "fog,gaussian_noise", 2, progress=False):
        per[c] = {"soup": evaluate_model(soup.create_model(), data, progress=False, device="cpu"),
                  **{str(i): evaluate_model(ing.create_model(), data, progress=False, device="cpu")
                     for i, ing in enumerate(soup.ingredients)}}
    assert sorted(per) == ["fog", "gaussian_noise"]

    def mean(key, attr):
        return math.fsum(getattr(per[c][key], attr) for c in sorted(per)) / len(per)

    assert row["c_severity"] == 2 and row["corrupted_fingerprint"]
    assert row["c_soup_acc"] == mean("soup", "accuracy") and row["c_soup_loss"] == mean("soup", "loss")
    assert (row["c_acc_a"], row["c_loss_a"]) == (mean("0", "accuracy"), mean("0", "loss"))
    assert (row["c_acc_b"], row["c_loss_b"]) == (mean("1", "accuracy"), mean("1", "loss"))
    assert row["c_acc_gain"] == row["c_soup_acc"] - max(row["c_acc_a"], row["c_acc_b"])
    assert row["c_loss_gain"] == min(row["c_loss_a"], row["c_loss_b"]) - row["c_soup_loss"]
    models = pq.read_table(out / "models.parquet").to_pylist()  # sorted by name: b008-v1, b016-v2
    assert [(m["c_acc"], m["c_loss"]) for m in models] == [(mean(k, "accuracy"), mean(k, "loss")) for k in "01"]
    # Another severity in the same folder would mix incomparable rows: refused, nothing written.
    from hfsoup.study.inputs import StudyInputError

    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(StudyInputError, match="another corrupted_fingerprint"):
        _run(out, refs, epochs=None, limit=8, alphas=[0.5], corrupted_dataset=str(conv), severity=3,
             corruptions="fog,gaussian_noise")
    assert sorted(p.name for p in out.rglob("*")) == before


# ------------------------------------------------------------------------------------------------- push
def test_push_publishes_the_tables_as_a_dataset(reference, hub, capsys):
    from huggingface_hub import HfApi

    from hfsoup.cli import main

    assert main(["study", "push", str(reference), "my-org/zoo-pairs", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["repo_type"] == "dataset" and sorted(doc["files"]) == ["README.md", "models.parquet",
                                                                     "pairs.parquet", "study.json"]
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    files = set(api.list_repo_files("my-org/zoo-pairs", repo_type="dataset"))
    assert {"README.md", "pairs.parquet", "models.parquet", "study.json"} <= files
    card = Path(api.hf_hub_download("my-org/zoo-pairs", "README.md", repo_type="dataset")).read_text()
    assert "config_name: pairs" in card and "config_name: models" in card and f"| rows (pair, α) | {NUM_ROWS}" in card
    pairs = Path(api.hf_hub_download("my-org/zoo-pairs", "pairs.parquet", repo_type="dataset"))
    assert pairs.read_bytes() == (reference / "pairs.parquet").read_bytes()
    assert pd.read_parquet(pairs).shape[0] == NUM_ROWS


def test_report_of_a_pushed_study_reads_the_hub_dataset(reference, hub, tmp_path, monkeypatch, capsys):
    """`hfsoup study report ORG/NAME` fetches the pushed tables (never re-evaluates) and reports beside the user."""
    from hfsoup.cli import main
    from hfsoup.study import figures

    monkeypatch.setattr(figures, "write_figures", lambda analysis, folder, svg=True: {})  # drawn in their own tests
    assert main(["study", "push", str(reference), "my-org/zoo-pairs2", "--json"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    assert main(["study", "report", "my-org/zoo-pairs2", "--n-boot", "10", "--json"]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert (tmp_path / "zoo-pairs2-report" / "summary.json").is_file()
    assert main(["study", "report", str(reference), "--out", str(tmp_path / "local"), "--n-boot", "10",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["headline"] == remote["headline"]
    assert main(["study", "report", "my-org/no-such-study", "--n-boot", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-study" in err[0]
