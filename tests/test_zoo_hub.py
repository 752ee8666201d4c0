"""Zoo publishing and consuming through the loopback Hub stand-in: names, collection, manifest, pinned shas,
filters, resumable push (injected failures) and pull, checksum verification, dry run without network."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import save_model_dir

SCALES = {1: (0.7073, 1.1009, 0.8284), 2: (1.2244, 0.9247, 1.1150)}


def _meta(kind, epoch, variant, seed):
    lr_s, m_s, wd_s = SCALES.get(variant, (1.0, 1.0, 1.0))
    meta = {"kind": kind, "lr_scale": lr_s, "momentum_scale": m_s, "weight_decay_scale": wd_s,
            "lr": 0.1 * lr_s, "momentum": 0.9 * m_s, "weight_decay": 5e-4 * wd_s, "seed": seed,
            "val_accuracy": 0.5 + seed / 100, "val_loss": 2.0 - seed / 10, "test_accuracy": 0.49 + seed / 100,
            "test_loss": 2.1 - seed / 10, "dataset": "uoft-cs/cifar100", "architecture": "resnet10_cifar_nano"}
    if kind == "trunk":
        meta["epoch"] = epoch
    else:
        meta.update(branch_epoch=epoch, variant=variant)
    return meta


@pytest.fixture(scope="module")
def built_zoo_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo_template") / "zoo"
    (root).mkdir()
    (root / "zoo.yaml").write_text("branch_epochs: [50, 60]\n")
    save_model_dir(root / "trunk" / "e050", seed=0, metadata=_meta("trunk", 50, None, 0))
    seed = 1
    for epoch in (50, 60):
        for v in (1, 2):
            save_model_dir(root / "branches" / f"b{epoch:03d}-v{v}", seed=seed, metadata=_meta("branch", epoch, v, seed))
            seed += 1
    return root


@pytest.fixture
def built_zoo(built_zoo_template, tmp_path):
    root = tmp_path / "zoo"
    shutil.copytree(built_zoo_template, root)
    return root


NAMES = ["my-org/resnet50-cifar100-trunk-e050", "my-org/resnet50-cifar100-b050-v1",
         "my-org/resnet50-cifar100-b050-v2", "my-org/resnet50-cifar100-b060-v1", "my-org/resnet50-cifar100-b060-v2"]


def _push(root, **kw):
    from hfsoup.zoo.publish import push_zoo

    return push_zoo(root, "my-org", progress=False, backoff=0.01, **kw).to_dict()


@pytest.fixture
def published(hub, built_zoo):
    return built_zoo, _push(built_zoo)


def test_dry_run_makes_no_requests(hub, built_zoo, capsys):
    from hfsoup.cli import main

    assert main(["zoo", "push", str(built_zoo), "--org", "my-org", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert hub.requests == []
    assert "resnet50-cifar100-b060-v2" in out and "dry run" in out
    assert not (built_zoo / ".push-state.json").exists()


def test_push_names_collection_manifest(published, hub):
    from hfsoup.hub.format import decode_metadata
    from hfsoup.core.ingredients import sha256_file

    root, doc = published
    assert [m["repo_id"] for m in doc["models"]] == NAMES
    for m in doc["models"]:
        repo = hub.repos[("model", m["repo_id"])]
        assert len(repo.commits) == 2  # the initial commit + exactly one upload
        head = hub.head(m["repo_id"])
        assert head.sha == m["commit"]
        assert set(head.files) == {".gitattributes", "model.safetensors", "config.json", "README.md"}
    coll = hub.collections[doc["collection"]]
    assert [i["id"] for i in coll["items"]] == NAMES + ["my-org/hfsoup-zoo"]
    manifest = json.loads(hub.head("my-org/hfsoup-zoo").files["zoo.json"])
    assert manifest == json.loads((root / "zoo.json").read_text())
    b = next(m for m in manifest["models"] if m["repo_id"].endswith("b060-v2"))
    assert b["kind"] == "branch" and b["branch_epoch"] == 60 and b["variant"] == 2
    assert b["metadata"]["lr_scale"] == pytest.approx(1.2244) and b["scores"]["val_accuracy"] == pytest.approx(0.54)
    assert b["files"]["model.safetensors"] == sha256_file(root / "branches" / "b060-v2" / "model.safetensors")
    t = manifest["models"][0]
    assert t["kind"] == "trunk" and t["epoch"] == 50 and "variant" not in t
    assert "README.md" in hub.head("my-org/hfsoup-zoo").files
    assert decode_metadata({"x": "1"})["x"] == 1


def test_rerun_is_a_no_op(published, hub):
    root, _ = published
    n_commits = hub.count("POST", "/commit/")
    doc = _push(root)
    assert all(m["status"] == "done" for m in doc["models"])
    assert hub.count("POST", "/commit/") == n_commits  # not even the manifest changed
    # even without the state file, nothing is committed twice (the Hub client skips unchanged files)
    (root / ".push-state.json").unlink()
    _push(root)
    assert all(len(hub.repos[("model", n)].commits) == 2 for n in NAMES)
    assert len(hub.repos[("model", "my-org/hfsoup-zoo")].commits) == 2


def test_push_backs_off_on_rate_limits(hub, built_zoo):
    hub.fail_next(3, status=429)
    hub.fail_next(1, status=503, path_contains="/api/collections")
    doc = _push(built_zoo)
    assert [m["status"] for m in doc["models"]] == ["pushed"] * 5
    assert all(len(hub.repos[("model", n)].commits) == 2 for n in NAMES)


def test_interrupted_push_resumes_without_duplicates(hub, built_zoo):
    from hfsoup.errors import PushError

    hub.fail_next(100, status=503, path_contains="resnet50-cifar100-b060-v1/commit")
    with pytest.raises(PushError, match="b060-v1.*rerun"):
        _push(built_zoo, max_retries=2)
    state = json.loads((built_zoo / ".push-state.json").read_text())
    assert sorted(state["repos"]) == sorted(NAMES[:3])
    hub.clear_failures()
    before = {n: hub.count("POST", f"{n}/commit/") for n in NAMES}
    doc = _push(built_zoo)
    assert [m["status"] for m in doc["models"]] == ["done"] * 3 + ["pushed"] * 2
    for n in NAMES[:3]:
        assert hub.count("POST", f"{n}/commit/") == before[n]  # no new commit attempts for finished repos
    assert all(len(hub.repos[("model", n)].commits) == 2 for n in NAMES)


def test_cli_push_subprocess_and_list(hub, built_zoo, run_cli):
    p = run_cli(["zoo", "push", built_zoo, "--org", "my-org", "--json"], hub.env)
    assert p.returncode == 0, p.stderr
    assert hub.token not in p.stdout + p.stderr
    p = run_cli(["zoo", "list", "my-org/hfsoup-zoo", "--json", "--epochs", "60"], hub.env)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)["models"]
    assert [r["repo_id"] for r in rows] == NAMES[3:]
    assert rows[0]["lr_scale"] == pytest.approx(0.7073) and rows[0]["test_accuracy"] == pytest.approx(0.52)


def test_list_table_and_local_sources(published, capsys):
    from hfsoup.cli import main
    from hfsoup.zoo.manifest import list_zoo

    root, doc = published
    assert main(["zoo", "list", "my-org/hfsoup-zoo"]) == 0
    out = capsys.readouterr().out
    assert "resnet50-cifar100-b050-v2" in out and "0.7073" in out
    assert [r.repo_id for r in list_zoo(root / "zoo.json", variants="2").models] == [NAMES[2], NAMES[4]]
    (root / "zoo.json").unlink()
    local = list_zoo(root).models  # an unpublished zoo folder
    assert [r.repo_id.split("/")[1] for r in local] == [n.split("/")[1] for n in NAMES]
    assert all(r.commit is None for r in local)
    assert (local[1].lr_scale, local[1].momentum_scale, local[1].weight_decay_scale) == SCALES[1]


def test_pull_pinned_filtered_verified(published, hub, tmp_path, capsys):
    from hfsoup.cli import main
    from hfsoup.core.ingredients import sha256_file
    from hfsoup.hub.upload import push

    root, doc = published
    # a later commit on main must not change what the manifest pins
    push(root / "trunk" / "e050", NAMES[3])
    out = tmp_path / "pulled"
    assert main(["zoo", "pull", "my-org/hfsoup-zoo", "--out", str(out), "--epochs", "55-60", "--variants", "1",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [m["repo_id"] for m in res["models"]] == [NAMES[3]]
    got = out / "resnet50-cifar100-b060-v1"
    assert sha256_file(got / "model.safetensors") == sha256_file(root / "branches" / "b060-v1" / "model.safetensors")
    assert json.loads((out / "zoo.json").read_text())["models"][3]["commit"] == doc["models"][3]["commit"]
    assert not (got / ".cache").exists() and not (out / ".partial").exists()


def test_pull_resumes(published, hub, tmp_path):
    from hfsoup.zoo.pull import pull_zoo

    out = tmp_path / "pulled"
    first = pull_zoo("my-org/hfsoup-zoo", out, workers=2, progress=False)
    assert [m.status for m in first.models] == ["downloaded"] * 5
    assert [m.repo_id for m in first.models] == NAMES
    # simulate an interrupted pull: one folder gone, one truncated
    shutil.rmtree(out / "resnet50-cifar100-b050-v1")
    (out / "resnet50-cifar100-b060-v2" / "model.safetensors").write_bytes(b"partial")
    n = hub.count("GET", "/resolve/")
    again = pull_zoo("my-org/hfsoup-zoo", out, workers=2, progress=False)
    status = {m.repo_id: m.status for m in again.models}
    assert status[NAMES[1]] == status[NAMES[4]] == "downloaded"
    assert [status[n_] for n_ in (NAMES[0], NAMES[2], NAMES[3])] == ["verified"] * 3
    assert hub.count("GET", "/resolve/") - n <= 2 * 3 + 1  # only the two broken folders (+ the manifest)


def test_pull_checksum_mismatch(published, hub, tmp_path):
    from hfsoup.zoo.pull import ChecksumError, pull_zoo

    root, _ = published
    manifest = json.loads((root / "zoo.json").read_text())
    manifest["models"][1]["files"]["config.json"] = "0" * 64
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(manifest))
    with pytest.raises(ChecksumError, match="b050-v1.*config.json"):
        pull_zoo(bad, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "resnet50-cifar100-b050-v1").exists()
    assert (tmp_path / "out" / "resnet50-cifar100-b050-v2").is_dir()


def test_one_line_errors(hub, built_zoo, tmp_path, capsys):
    from hfsoup.cli import main

    def err(*args):
        assert main(list(map(str, args))) == 2
        e = capsys.readouterr().err.strip()
        assert len(e.splitlines()) == 1 and "Traceback" not in e
        return e

    assert "my-org/nothing" in err("zoo", "list", "my-org/nothing")
    (tmp_path / "m.json").write_text("{\"models\": [{\"repo_id\": \"a/b\"}]}")
    assert "commit" in err("zoo", "pull", tmp_path / "m.json", "--out", tmp_path / "o")
    (tmp_path / "n.json").write_text("not json")
    assert "JSON" in err("zoo", "list", tmp_path / "n.json")
    _push(built_zoo)
    assert "--epochs" in err("zoo", "pull", "my-org/hfsoup-zoo", "--out", tmp_path / "o", "--epochs", "x-1")
    assert "--variants" in err("zoo", "pull", "my-org/hfsoup-zoo", "--out", tmp_path / "o", "--variants", "3-1")
    assert "no model" in err("zoo", "pull", "my-org/hfsoup-zoo", "--out", tmp_path / "o", "--epochs", "999")
    assert "hfsoup-zoo" in err("zoo", "list", "my-org/resnet50-cifar100-b050-v1")  # no zoo.json there
    assert "does not exist" in err("zoo", "push", tmp_path / "nope", "--org", "my-org")


LIGHT_PROBE = """
import contextlib, io, json, sys
from hfsoup.cli import main
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = main(ARGV)
heavy = sorted(m for m in ("torch", "timm", "torchvision", "datasets") if m in sys.modules)
print(json.dumps({"rc": rc, "out": buf.getvalue(), "heavy": heavy}))
"""


def _light_run(argv, env=None):
    import os
    import subprocess
    import sys

    env = dict(env or os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", LIGHT_PROBE.replace("ARGV", repr([str(a) for a in argv]))],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_list_and_dry_run_import_no_torch(published, built_zoo_template):
    """`zoo list` (of a manifest file and of a zoo folder) and `zoo push --dry-run` run without torch."""
    root, doc = published
    res = _light_run(["zoo", "list", root / "zoo.json", "--json", "--variants", "2"])
    assert res["rc"] == 0 and res["heavy"] == []
    rows = json.loads(res["out"])["models"]
    assert [r["repo_id"] for r in rows] == [NAMES[2], NAMES[4]]
    assert rows[0]["commit"] == doc["models"][2]["commit"] and rows[0]["lr_scale"] == 1.2244

    res = _light_run(["zoo", "list", built_zoo_template, "--json"])  # an unpublished folder: read from the files
    assert res["rc"] == 0 and res["heavy"] == []
    rows = json.loads(res["out"])["models"]
    assert [r["repo_id"] for r in rows] == [n.replace("my-org", "local") for n in NAMES]
    assert rows[0]["kind"] == "trunk" and rows[0]["epoch"] == 50 and rows[0]["test_accuracy"] == 0.49

    res = _light_run(["zoo", "push", built_zoo_template, "--org", "my-org", "--dry-run", "--json"])
    assert res["rc"] == 0 and res["heavy"] == []
    plan = json.loads(res["out"])
    assert plan["dry_run"] is True and plan["manifest_repo"] == "my-org/hfsoup-zoo" and plan["collection"] is None
    assert [m["repo_id"] for m in plan["models"]] == NAMES and {m["status"] for m in plan["models"]} == {"push"}
    assert "manifest_commit" not in plan
    assert not (built_zoo_template / ".push-state.json").exists()


def test_typed_results_match_the_json(published, tmp_path):
    from hfsoup.zoo.manifest import ZooEntry, list_zoo
    from hfsoup.zoo.publish import PushedModel, plan_push
    from hfsoup.zoo.pull import PulledModel, pull_zoo

    root, doc = published
    plan = plan_push(root, "my-org")
    assert all(isinstance(m, PushedModel) and m.status == "done" for m in plan)
    assert [m.to_dict() for m in plan] == [dict(m, status="done") for m in doc["models"]]
    listing = list_zoo(root / "zoo.json", epochs="60")
    assert all(isinstance(r, ZooEntry) for r in listing.models)
    assert listing.to_dict()["models"][0] == {
        "repo_id": NAMES[3], "commit": doc["models"][3]["commit"], "kind": "branch", "epoch": 60, "variant": 1,
        "lr_scale": 0.7073, "momentum_scale": 1.1009, "weight_decay_scale": 0.8284, "val_accuracy": pytest.approx(0.53),
        "val_loss": pytest.approx(1.7), "test_accuracy": pytest.approx(0.52), "test_loss": pytest.approx(1.8)}
    pulled = pull_zoo(root / "zoo.json", tmp_path / "p", kind="trunk", progress=False)
    assert pulled.models == [PulledModel(NAMES[0], doc["models"][0]["commit"],
                                         str(tmp_path / "p" / NAMES[0].split("/")[1]), "downloaded")]
    assert pulled.to_dict()["manifest"] == str(tmp_path / "p" / "zoo.json")


def test_zoo_init_help_has_examples(capsys):
    from hfsoup.cli import main

    with pytest.raises(SystemExit):
        main(["zoo", "init", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "hfsoup zoo init zoo.yaml" in out
