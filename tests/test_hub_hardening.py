"""Issue 11 (hardening) through the loopback Hub stand-in: what a malicious manifest cannot do (pickles, paths
outside --out, wrong types), a Hub that does not answer or refuses connections (bounded, one line, a hint),
server errors and rate limits named as such, ranges that are never expanded, the zoo's repo names and cards."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import save_model_dir
from hub_fixtures import point_hf_at
from hub_server import closed_port_endpoint


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _within(seconds: float, fn):
    """``fn()``'s result or exception, failing the test (instead of hanging it) when it takes over ``seconds``."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t0 = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: the call hangs"
    box["elapsed"] = time.monotonic() - t0
    return box


@pytest.fixture(scope="module")
def model_template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("h2_model") / "m"
    save_model_dir(folder, seed=0, metadata={"kind": "branch", "branch_epoch": 50, "variant": 1, "seed": 0})
    return folder


@pytest.fixture
def model_folder(model_template, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(model_template, folder)
    return folder


def _manifest_entry(repo_id: str, commit: str, files: dict[str, str], **extra) -> dict:
    return {"repo_id": repo_id, "commit": commit, "kind": "branch", "branch_epoch": 50, "variant": 1,
            "files": files, **extra}


def _write_manifest(path: Path, models: list[dict], **top) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": "hfsoup-zoo/1", "org": "org", "models": models, **top}))
    return path


# -- 1b: only the files hfsoup reads -------------------------------------------------------------------------------
def test_pull_fetches_only_the_files_hfsoup_reads(hub, model_folder, tmp_path):
    from hfsoup.hub.upload import upload_folder
    from hfsoup.zoo.pull import pull_zoo

    (model_folder / "pytorch_model.bin").write_bytes(b"a pickle that must never be fetched")
    commit = upload_folder(model_folder, "org/evil-b050-v1").commit
    files = {n: _sha256((model_folder / n).read_bytes())
             for n in ("config.json", "model.safetensors", "README.md", "pytorch_model.bin")}
    manifest = _write_manifest(tmp_path / "zoo.json", [_manifest_entry("org/evil-b050-v1", commit, files)])
    res = pull_zoo(manifest, tmp_path / "out", progress=False)
    folder = tmp_path / "out" / "evil-b050-v1"
    assert res.models[0].status == "downloaded"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert hub.count(contains="pytorch_model.bin") == 0  # never even requested


# -- 3: repo ids and file names of a manifest ------------------------------------------------------------------------
@pytest.mark.parametrize("repo_id, files, fragment", [
    ("evil/../../x", None, "not a Hub repo id 'org/name'"),
    ("org/..", None, "'org/..' is not a valid Hub repo id"),
    ("../x", None, "'../x' is not a valid Hub repo id"),
    ("org//x", None, "not a Hub repo id"),
    ("org/x/y", None, "not a Hub repo id"),
    ("org/x", {"../evil.json": "0" * 64}, "lists the file '../evil.json'"),
    ("org/x", {"sub/model.safetensors": "0" * 64}, "only plain file names"),
    ("org/x", {"..": "0" * 64}, "lists the file '..'"),
])
def test_manifest_ids_and_file_names_are_checked_before_any_write(tmp_path, monkeypatch, repo_id, files,
                                                                  fragment):
    from hfsoup.zoo.manifest import ZooManifestError
    from hfsoup.zoo.pull import pull_zoo

    monkeypatch.chdir(tmp_path)
    files = files or {"config.json": "0" * 64, "model.safetensors": "1" * 64}
    manifest = _write_manifest(tmp_path / "m" / "zoo.json", [_manifest_entry(repo_id, "a" * 40, files)])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ZooManifestError, match=fragment):
        pull_zoo(manifest, tmp_path / "a" / "b" / "out", progress=False)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing was created


def test_pull_never_writes_through_a_link_out_of_the_output_folder(tmp_path):
    from hfsoup.zoo.manifest import ZooManifestError
    from hfsoup.zoo.pull import pull_zoo

    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").symlink_to(outside, target_is_directory=True)  # a folder name of the manifest, leading out
    manifest = _write_manifest(tmp_path / "zoo.json", [_manifest_entry(
        "org/x", "a" * 40, {"config.json": "0" * 64, "model.safetensors": "1" * 64})])
    with pytest.raises(ZooManifestError, match="outside"):
        pull_zoo(manifest, out, progress=False)
    assert list(outside.iterdir()) == []


# -- 11b: manifests and configs with wrong types ------------------------------------------------------------------
@pytest.mark.parametrize("change, fragment", [
    ({"scores": "high"}, "has 'scores' of type str, not an object"),
    ({"scores": {"val_accuracy": "0.9"}}, "has score val_accuracy '0.9', not a number"),
    ({"branch_epoch": "fifty"}, "has branch_epoch 'fifty', not a non-negative integer"),
    ({"variant": [1]}, "has variant [1], not a non-negative integer"),
    ({"metadata": [1, 2]}, "has 'metadata' of type list"),
])
def test_manifest_with_wrong_types_is_a_one_line_error(tmp_path, capsys, change, fragment):
    from hfsoup.cli import main

    files = {"config.json": "0" * 64, "model.safetensors": "1" * 64}
    manifest = _write_manifest(tmp_path / "zoo.json", [_manifest_entry("org/x", "a" * 40, files, **change)])
    assert main(["zoo", "list", str(manifest)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hfsoup: error: ") and fragment in err and "\n" not in err


def test_manifest_with_a_non_string_org_is_a_one_line_error(tmp_path, capsys):
    from hfsoup.cli import main

    manifest = _write_manifest(tmp_path / "zoo.json", [], org=5)
    assert main(["zoo", "list", str(manifest)]) == 2
    assert "'org' is int, not a string" in capsys.readouterr().err


@pytest.mark.parametrize("yaml_text, fragment", [
    ("train:\n  epochs: abc\n", "train.epochs must be an integer, got 'abc'"),
    ("branches:\n  epochs: abc\n", "branches.epochs must be a list of epochs or {start, stop, step}, got 'abc'"),
    ("branches:\n  epochs: [50, x]\n", "branches.epochs[1] must be an integer, got 'x'"),
    ("optim:\n  lr: fast\n", "optim.lr must be a number, got 'fast'"),
    ("train: 5\n", "section 'train' must be a mapping"),
    ("branches:\n  variants:\n    1: {lr_scale: big}\n", "branches.variants.1.lr_scale must be a number"),
])
def test_zoo_config_with_wrong_types_is_a_one_line_error(tmp_path, capsys, yaml_text, fragment):
    from hfsoup.cli import main

    (tmp_path / "zoo.yaml").write_text(yaml_text)
    assert main(["zoo", "build", "--config", str(tmp_path / "zoo.yaml"), "--out", str(tmp_path / "z"),
                 "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hfsoup: error: ") and fragment in err and "\n" not in err


# -- 9: ranges are never expanded --------------------------------------------------------------------------------
def test_huge_ranges_parse_instantly_and_membership_works():
    from hfsoup.core.ranges import IntRanges
    from hfsoup.study.inputs import parse_int_set
    from hfsoup.zoo.manifest import parse_int_spec, select_models

    t0 = time.perf_counter()
    r = IntRanges.parse("0-99999999999", "--epochs")
    big = parse_int_spec("5-99999999999,3", "--epochs")
    study = parse_int_set("10-99999999999", "--epochs")
    models = select_models([{"kind": "branch", "branch_epoch": 70, "variant": 1},
                            {"kind": "trunk", "epoch": 2}], epochs="5-99999999999")
    assert time.perf_counter() - t0 < 0.5
    assert 0 in r and 99999999999 in r and 100000000000 not in r and -1 not in r and "5" not in r
    assert len(r) == 100000000000 and str(big) == "3,5-99999999999" and 4 not in big
    assert 10 in study and 9 not in study
    assert [m.get("branch_epoch") for m in models] == [70]
    spec = IntRanges.parse(" 150 - 300 , 50,301-310,49", "--epochs")
    assert spec.ranges == ((49, 50), (150, 310)) and str(spec) == "49-50,150-310"
    assert [x for x in (48, 49, 50, 51, 149, 150, 310, 311) if x in spec] == [49, 50, 150, 310]
    assert parse_int_spec(None, "--epochs") is None and parse_int_set("  ", "--variants") is None


@pytest.mark.parametrize("spec, fragment", [
    ("abc", "bad --epochs 'abc': 'abc' is not a number or an inclusive range: use e.g. 150-300 or 1,3"),
    ("300-150", "bad --epochs '300-150': range 300-150 is empty: write the smaller number first (150-300)"),
    ("1,,2", "bad --epochs '1,,2': '' is not a number"),
    ("-5", "'-5' is not a number"),
])
def test_bad_range_specs_name_the_option_and_the_fix(spec, fragment):
    from hfsoup.errors import InvalidParameterError, InvalidRangeError
    from hfsoup.study.inputs import parse_int_set
    from hfsoup.zoo.manifest import parse_int_spec

    for parse in (parse_int_spec, parse_int_set):
        with pytest.raises(InvalidRangeError) as e:
            parse(spec, "--epochs")
        assert fragment in str(e.value) and e.value.parameter == "--epochs"
        assert isinstance(e.value, InvalidParameterError)


def test_zoo_config_range_is_bounded_before_it_is_expanded():
    from hfsoup.zoo.config import ConfigError, config_from_dict

    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"lists 99999999950 epochs \(at most 10000\)"):
        config_from_dict({"branches": {"epochs": {"start": 50, "stop": 99999999999, "step": 1}}})
    assert time.perf_counter() - t0 < 0.5
    cfg = config_from_dict({"branches": {"epochs": {"start": 50, "stop": 300, "step": 10}}})
    assert cfg.branches.epochs == list(range(50, 301, 10))


# -- 2 and 11b: a Hub that does not answer, or refuses connections -------------------------------------------------
def test_hub_that_never_answers_fails_within_the_bound(hub, model_folder, monkeypatch):
    from hfsoup.core.references import resolve
    from hfsoup.errors import HfSoupError, OfflineError, PushError
    from hfsoup.hub.upload import upload_folder
    from hfsoup.zoo.manifest import list_zoo

    monkeypatch.setenv("HFSOUP_HUB_TIMEOUT", "0.5")
    hub.hang = True
    for call in (lambda: list_zoo("my-org/hfsoup-zoo"), lambda: resolve("org/some-model")):
        box = _within(30, call)
        assert isinstance(box.get("error"), OfflineError), box
        msg = str(box["error"])
        assert box["elapsed"] < 5, box
        assert "no answer in time (HFSOUP_HUB_TIMEOUT" in msg and "HF_HUB_OFFLINE=1" in msg and "\n" not in msg
    box = _within(60, lambda: upload_folder(model_folder, "org/x", backoff=0.01))
    assert isinstance(box.get("error"), PushError) and box["elapsed"] < 15, box  # 1 retry, commit waits 6 x 0.5 s
    assert "gave up after 2 attempts" in str(box["error"]) and "no answer in time" in str(box["error"])
    assert not isinstance(box["error"], OfflineError) and isinstance(box["error"], HfSoupError)


def test_hub_timeout_setting_is_checked(hub, monkeypatch):
    from hfsoup.errors import InvalidParameterError
    from hfsoup.zoo.manifest import list_zoo

    monkeypatch.setenv("HFSOUP_HUB_TIMEOUT", "soon")
    with pytest.raises(InvalidParameterError, match="HFSOUP_HUB_TIMEOUT='soon' is not a positive number"):
        list_zoo("my-org/hfsoup-zoo")


def test_connection_refused_is_a_fast_one_line_error_with_the_hint(hub, model_folder, tmp_path, monkeypatch):
    from hfsoup import push
    from hfsoup.core.references import resolve
    from hfsoup.errors import OfflineError, PushError
    from hfsoup.zoo.manifest import list_zoo

    dead = closed_port_endpoint()
    point_hf_at(monkeypatch, dead, hub.home)
    for call in (lambda: list_zoo("my-org/hfsoup-zoo"), lambda: resolve("org/some-model")):
        box = _within(60, call)
        assert isinstance(box.get("error"), OfflineError) and box["elapsed"] < 5, box
        msg = str(box["error"])
        assert f"cannot reach the Hub at {dead}" in msg and "HF_HUB_OFFLINE=1" in msg and "\n" not in msg
    box = _within(120, lambda: push(model_folder, "org/x"))  # the library call raises the mapped error too
    assert isinstance(box.get("error"), PushError) and box["elapsed"] < 8, box
    assert f"cannot reach the Hub at {dead}" in str(box["error"])


def test_cli_push_and_zoo_commands_without_network_exit_2_quickly(hub, model_folder, tmp_path):
    env = {**hub.env, "HF_ENDPOINT": closed_port_endpoint(), "HFSOUP_HUB_TIMEOUT": "2"}
    zoo = tmp_path / "zoo"
    shutil.copytree(model_folder, zoo / "branches" / "b050-v1")
    for args in (["push", model_folder, "org/x"], ["zoo", "push", zoo, "--org", "org", "-q"],
                 ["zoo", "list", "org/hfsoup-zoo"], ["zoo", "pull", "org/hfsoup-zoo", "--out", tmp_path / "o"]):
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "hfsoup", *map(str, args)], env=env, capture_output=True,
                             text=True, timeout=200)
        elapsed = time.monotonic() - t0
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("hfsoup: error: "), (args, res.stderr)
        assert "cannot reach the Hub" in lines[0] and elapsed < 20, (args, elapsed, lines)


# -- 12: the right message ---------------------------------------------------------------------------------------
def test_offline_without_cache_says_offline_not_missing_manifest(hub, hub_offline, capsys):
    from hfsoup.cli import main

    hub_offline()
    assert main(["zoo", "list", "my-org/hfsoup-zoo"]) == 2
    err = capsys.readouterr().err
    assert "not in the local HF cache" in err and "HF_HUB_OFFLINE=1" in err and "has no zoo.json" not in err
    # a cached snapshot of the repo without the manifest: offline, nobody can tell the repo has none
    snapshot = hub.cache / "models--my-org--hfsoup-zoo" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    assert main(["zoo", "list", "my-org/hfsoup-zoo"]) == 2
    err = capsys.readouterr().err
    assert "not in the local HF cache" in err and "has no zoo.json" not in err


def test_repo_without_manifest_says_so(hub, model_folder, capsys):
    from hfsoup.cli import main
    from hfsoup.hub.upload import upload_folder

    upload_folder(model_folder, "my-org/not-a-zoo")
    assert main(["zoo", "list", "my-org/not-a-zoo"]) == 2
    assert "'my-org/not-a-zoo' has no zoo.json: pass the manifest repo (my-org/hfsoup-zoo)" in \
        capsys.readouterr().err


@pytest.mark.parametrize("status, fragment", [
    (500, "the Hub answered HTTP 500 (server error): try again later"),
    (503, "the Hub answered HTTP 503 (server error): try again later"),
    (429, "rate limited by the Hub (HTTP 429): wait a few minutes and rerun"),
])
def test_server_errors_and_rate_limits_are_named(hub, model_folder, capsys, status, fragment):
    from hfsoup.cli import main
    from hfsoup.core.references import resolve
    from hfsoup.errors import ModelReferenceError, OfflineError
    from hfsoup.hub.upload import upload_folder

    upload_folder(model_folder, "org/m")
    hub.fail_next(100, status, method=None, path_contains="")
    assert main(["zoo", "list", "my-org/hfsoup-zoo"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "offline" not in err and "local HF cache" not in err
    with pytest.raises(ModelReferenceError) as e:
        resolve("org/m")
    assert fragment in str(e.value) and not isinstance(e.value, OfflineError)


# -- 18: what zoo push publishes, and under which names ----------------------------------------------------------
def _zoo(root: Path, yaml_text: str | None) -> Path:
    meta = {"kind": "trunk", "epoch": 50, "seed": 0}
    save_model_dir(root / "trunk" / "e050", seed=0, metadata=meta)
    for v in (1, 2):
        save_model_dir(root / "branches" / f"b050-v{v}", seed=v,
                       metadata={"kind": "branch", "branch_epoch": 50, "variant": v, "seed": v})
    if yaml_text is not None:
        (root / "zoo.yaml").write_text(yaml_text)
    return root


def test_zoo_prefix_comes_from_the_config_and_branches_only(tmp_path):
    from hfsoup.zoo.config import DEFAULT_YAML
    from hfsoup.zoo.publish import plan_push

    default = _zoo(tmp_path / "default", DEFAULT_YAML)
    assert [r.repo_id for r in plan_push(default, "org")] == [
        "org/resnet50-cifar100-trunk-e050", "org/resnet50-cifar100-b050-v1", "org/resnet50-cifar100-b050-v2"]
    assert [r.repo_id for r in plan_push(default, "org", branches_only=True)] == [
        "org/resnet50-cifar100-b050-v1", "org/resnet50-cifar100-b050-v2"]
    digits = _zoo(tmp_path / "digits", "data:\n  dataset: sklearn:digits\ntrain:\n  architecture: resnet18_cifar\n")
    assert [r.repo_id for r in plan_push(digits, "org")][:2] == ["org/resnet18-digits-trunk-e050",
                                                                 "org/resnet18-digits-b050-v1"]
    assert [r.repo_id for r in plan_push(digits, "org", prefix="mine")][1] == "org/mine-b050-v1"


def test_zoo_push_help_says_what_is_published(capsys):
    from hfsoup.cli import main

    with pytest.raises(SystemExit):
        main(["zoo", "push", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--branches-only" in out and "104 branches" in out and "30 trunk checkpoints" in out
    assert "ARCHITECTURE-DATASET" in out
    with pytest.raises(SystemExit):
        main(["zoo", "init", "--help"])
    out = capsys.readouterr().out
    assert "examples:\n  hfsoup zoo init zoo.yaml\n" in out


# -- 19: the pushed card names its repo ---------------------------------------------------------------------------
def test_pushed_card_names_the_repo(hub, model_folder):
    from hfsoup import push

    local = (model_folder / "README.md").read_text()
    assert "hf-hub:ORG/NAME" in local
    push(model_folder, "org/soup-x")
    card = hub.head("org/soup-x").files["README.md"].decode()
    assert 'timm.create_model("hf-hub:org/soup-x", pretrained=True)' in card and "ORG/NAME" not in card
    assert (model_folder / "README.md").read_text() == local  # the local folder is left as it is


def test_zoo_push_cards_name_their_repo_and_pull_verifies(hub, tmp_path):
    from hfsoup.zoo.publish import push_zoo
    from hfsoup.zoo.pull import pull_zoo

    root = _zoo(tmp_path / "zoo", None)
    res = push_zoo(root, "my-org", progress=False, backoff=0.01, branches_only=True)
    assert [m.repo_id for m in res.models] == ["my-org/resnet50-cifar100-b050-v1", "my-org/resnet50-cifar100-b050-v2"]
    card = hub.head("my-org/resnet50-cifar100-b050-v1").files["README.md"]
    assert b'"hf-hub:my-org/resnet50-cifar100-b050-v1"' in card and b"ORG/NAME" not in card
    manifest = json.loads(hub.head("my-org/hfsoup-zoo").files["zoo.json"])
    assert manifest["models"][0]["files"]["README.md"] == _sha256(card)
    assert [m["kind"] for m in manifest["models"]] == ["branch", "branch"]
    pulled = pull_zoo("my-org/hfsoup-zoo", tmp_path / "out", progress=False)
    assert [m.status for m in pulled.models] == ["downloaded", "downloaded"]
    # a rerun of the push finds everything up to date (the state records the published hashes)
    again = push_zoo(root, "my-org", progress=False, backoff=0.01, branches_only=True)
    assert [m.status for m in again.models] == ["done", "done"]


def test_dataset_from_a_hub_that_never_answers_fails_within_the_bound(hub, monkeypatch):
    """A dataset from a Hub that does not answer fails after one bounded request (hfsoup probes the Hub once before
    `datasets`, whose client would retry each file request 5 times with 1-8 s sleeps: over a minute)."""
    from hfsoup.data.images import load_image_data
    from hfsoup.errors import HfSoupError

    monkeypatch.setenv("HFSOUP_HUB_TIMEOUT", "0.5")
    hub.hang = True
    box = _within(60, lambda: load_image_data("org/some-dataset", "test", progress=False))
    assert isinstance(box.get("error"), HfSoupError), box
    assert box["elapsed"] < 5, box
    assert "\n" not in str(box["error"]) and "HF_HUB_OFFLINE=1" in str(box["error"])
