"""Hardening of the core (issue 11): config allow-list, safetensors header validation, concurrent and forced folder
writes, outputs that overlap inputs, byte-reproducible soups, no local paths in published files, file modes."""

from __future__ import annotations

import json
import os
import stat
import struct
import threading
from pathlib import Path

import pytest
import torch

from conftest import folder_metadata, save_model_dir
from hfsoup.cli import main
from hfsoup.errors import CorruptFileError, OutputExistsError, OutputOverlapsInputError, UnsafeConfigError

ASSETS = Path(__file__).resolve().parents[1] / "hfsoup" / "assets" / "mini_zoo"


def cli(capsys, *args):
    """``hfsoup -q ARGS`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(["-q", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("hfsoup: error: "), err
    return lines[0]


# -- 1. config.json: only allow-listed, data-only fields reach timm -------------------------------------------------
def nano_config() -> dict:
    return json.loads(next(ASSETS.glob("trunk/*/config.json")).read_text())


REFUSED = [
    ("model_args.checkpoint_path", lambda c: c["model_args"].update(checkpoint_path="/tmp/evil.pth")),
    ("model_args.pretrained_cfg_overlay",
     lambda c: c["model_args"].update(pretrained_cfg_overlay={"file": "/tmp/evil.pth"})),
    ("model_args.pretrained_cfg", lambda c: c["model_args"].update(pretrained_cfg={"url": "http://x/evil.pth"})),
    ("model_args.cache_dir", lambda c: c["model_args"].update(cache_dir="/tmp")),
    ("pretrained_cfg.file", lambda c: c["pretrained_cfg"].update(file="/tmp/evil.pth")),
    ("pretrained_cfg.url", lambda c: c["pretrained_cfg"].update(url="http://x/evil.pth")),
    ("pretrained_cfg.hf_hub_id", lambda c: c["pretrained_cfg"].update(hf_hub_id="evil/weights")),
    ("pretrained_cfg.custom_load", lambda c: c["pretrained_cfg"].update(custom_load=True)),
    ("pretrained_cfg.loader", lambda c: c["pretrained_cfg"].update(loader="pickle")),
    ("architecture", lambda c: c.update(architecture="hf-hub:evil/model")),
    ("architecture", lambda c: c.update(architecture="no_such_model_xyz")),
    ("pretrained_file", lambda c: c.update(pretrained_file="/tmp/evil.pth")),
    ("pretrained_cfg.architecture", lambda c: c["pretrained_cfg"].update(architecture="hf-hub:evil/model")),
]


@pytest.mark.parametrize("key,edit", REFUSED, ids=[f"{k}-{i}" for i, (k, _) in enumerate(REFUSED)])
def test_build_model_refuses_config_entries_that_load_files(key, edit):
    from hfsoup.core.models import build_model

    config = nano_config()
    edit(config)
    with pytest.raises(UnsafeConfigError) as e:
        build_model(config)
    assert e.value.key == key
    assert f"refusing config entry '{key}'" in str(e.value) and "remove it from config.json" in str(e.value)
    assert isinstance(e.value, CorruptFileError) and isinstance(e.value, ValueError)


def test_build_model_never_passes_other_args_to_timm(monkeypatch):
    """Even for an allowed config, timm gets pretrained=False and only the allow-listed arguments."""
    import timm

    from hfsoup.core.models import build_model

    calls = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, **kw: calls.append((name, kw)) or real(name, **kw))
    build_model(nano_config())
    assert calls == [("resnet10_cifar_nano",
                      {"pretrained": False, "global_pool": "avg", "in_chans": 3, "num_classes": 10})]


def test_every_bundled_and_written_config_is_accepted():
    import timm

    from hfsoup.core.models import CIFAR_ARCHITECTURES, build_model, check_config
    from hfsoup.hub.format import timm_config

    configs = sorted(ASSETS.glob("*/*/config.json"))
    assert len(configs) >= 30
    for path in configs:
        check_config(json.loads(path.read_text()), source=path)
    model = build_model(json.loads(configs[0].read_text()))
    assert model.num_classes == 10 and list(model.pretrained_cfg["mean"]) == [0.5071, 0.4867, 0.4408]
    for arch in CIFAR_ARCHITECTURES:
        config = timm_config(timm.create_model(arch, num_classes=7), label_names=[str(i) for i in range(7)])
        assert check_config(json.loads(json.dumps(config))) == {"num_classes": 7, "in_chans": 3,
                                                                "global_pool": "avg"}
    # The layout timm's own save_for_hf writes (custom_load: false, no model_args) is accepted too.
    check_config({"architecture": "resnet18", "num_classes": 1000, "num_features": 512, "global_pool": "avg",
                  "pretrained_cfg": {"tag": "a1_in1k", "custom_load": False, "input_size": [3, 224, 224],
                                     "interpolation": "bicubic", "crop_pct": 0.95, "mean": [0.485, 0.456, 0.406],
                                     "std": [0.229, 0.224, 0.225], "num_classes": 1000, "classifier": "fc",
                                     "origin_url": "https://github.com/huggingface/pytorch-image-models",
                                     "paper_ids": "arXiv:2110.00476"}})


def test_unsafe_config_refused_when_a_model_is_loaded(tmp_path, capsys):
    from hfsoup.core.ingredients import load_ingredient

    good = save_model_dir(tmp_path / "good", seed=0)
    bad = save_model_dir(tmp_path / "bad", seed=1)
    config = json.loads((bad / "config.json").read_text())
    config["model_args"]["checkpoint_path"] = str(tmp_path / "evil.pth")
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeConfigError) as e:
        load_ingredient(bad)
    assert e.value.path == bad / "config.json" and str(bad / "config.json") in str(e.value)
    code, _, err = cli(capsys, "mix", good, bad, "--out", tmp_path / "soup")
    assert "refusing config entry 'model_args.checkpoint_path'" in one_line_error(code, err)
    assert not (tmp_path / "soup").exists()


# -- 4. safetensors headers are validated as the safetensors library does ------------------------------------------
def craft(path: Path, header, data: bytes = b"", raw: bytes | None = None) -> Path:
    """A safetensors file with the given header (any JSON value) and data section."""
    text = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def f32(shape, begin, end):
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


CORRUPT = {
    "overlapping": ({"a": f32([4], 0, 16), "b": f32([4], 8, 24)}, 24, "overlaps the previous tensor"),
    "gap": ({"a": f32([2], 0, 8), "b": f32([2], 12, 20)}, 20, "leaves a gap at byte 8"),
    "out-of-range": ({"a": f32([4], 0, 16)}, 8, "ends at byte 16 of the data section, which has only 8 bytes"),
    "wrong-byte-count": ({"a": f32([2, 2], 0, 8)}, 8, "has 8 bytes but shape [2, 2] x F32 needs 16"),
    "trailing-data": ({"a": f32([2], 0, 8)}, 12, "cover 8 bytes but the data section has 12"),
    "negative-dim": ({"a": f32([-1], 0, 0)}, 0, "invalid shape [-1]"),
    "unknown-dtype": ({"a": {"dtype": "F7", "shape": [1], "data_offsets": [0, 1]}}, 1, "unknown dtype 'F7'"),
    "reversed-offsets": ({"a": f32([0], 8, 0)}, 8, "invalid data_offsets [8, 0]"),
    "entry-not-object": ({"a": [0, 4]}, 4, "tensor 'a' is not a {dtype, shape, data_offsets} object"),
    "null-header": (None, 0, "the header is JSON null, not an object"),
    "list-header": ([], 0, "the header is JSON list, not an object"),
    "metadata-list": ({"__metadata__": ["format", "pt"]}, 0, "__metadata__ is not a map of strings to strings"),
    "metadata-int-value": ({"__metadata__": {"seed": 1}}, 0, "__metadata__ is not a map of strings to strings"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_safetensors_headers_are_refused(tmp_path, case):
    from hfsoup.core.safetensors_io import read_safetensors_header

    header, size, what = CORRUPT[case]
    path = craft(tmp_path / f"{case}.safetensors", header, bytes(size))
    with pytest.raises(CorruptFileError) as e:
        read_safetensors_header(path)
    msg = str(e.value)
    assert f"'{path}' is not a valid safetensors file: " in msg and what in msg, msg
    assert msg.endswith("delete it and download or save it again") and e.value.path == path


def test_garbage_header_bytes_are_refused(tmp_path):
    from hfsoup.core.safetensors_io import read_safetensors_header

    for name, raw in (("not-utf8", b"\xff\xfe{}"), ("not-json", b"{'a': 1}")):
        path = craft(tmp_path / f"{name}.safetensors", None, raw=raw)
        with pytest.raises(CorruptFileError, match="the header is not valid UTF-8 JSON"):
            read_safetensors_header(path)
    (tmp_path / "short.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CorruptFileError, match="fewer than the 8-byte header length"):
        read_safetensors_header(tmp_path / "short.safetensors")


def test_valid_headers_still_read(tmp_path):
    """Files written by safetensors itself and by hfsoup's writer (empty and scalar tensors, metadata) pass."""
    from safetensors.torch import load_file, save_file

    from hfsoup.core.safetensors_io import read_safetensors_header, write_safetensors

    tensors = {"w": torch.randn(3, 2), "h": torch.randn(4).half(), "n": torch.tensor(7), "e": torch.zeros(0, 5),
               "b": torch.tensor([True, False, True])}
    save_file(tensors, str(tmp_path / "lib.safetensors"), metadata={"format": "pt"})
    write_safetensors(tmp_path / "own.safetensors", tensors, metadata={"z": "1", "format": "pt"})
    for name in ("lib", "own"):
        infos, meta = read_safetensors_header(tmp_path / f"{name}.safetensors")
        assert {k: (i.shape, i.dtype) for k, i in infos.items()} == {k: (tuple(t.shape), t.dtype)
                                                                     for k, t in tensors.items()}
        assert meta["format"] == "pt"
    loaded = load_file(str(tmp_path / "own.safetensors"))
    assert all(torch.equal(loaded[k], t) for k, t in tensors.items())


# -- 5. concurrent writers: without force exactly one wins; with force out is never missing ------------------------
@pytest.fixture(params=["renameat2", "fallback"])
def rename_mode(request, monkeypatch):
    import hfsoup.core.files as files

    if request.param == "fallback":
        monkeypatch.setattr(files, "_renameat2", None, raising=False)
    elif getattr(files, "_renameat2", None) is None:
        pytest.skip("renameat2 is not available on this platform")
    return request.param


def race(out: Path, n: int, force: bool) -> list:
    """``n`` threads build ``out`` with atomic_folder at once (all pass the early check before any commits)."""
    from hfsoup.core.files import atomic_folder

    barrier, results = threading.Barrier(n), [None] * n

    def write(i):
        try:
            with atomic_folder(out, force=force) as tmp:
                (tmp / "model.safetensors").write_text(f"writer {i}")
                barrier.wait(timeout=30)
            results[i] = "ok"
        except BaseException as e:  # noqa: BLE001 - recorded for the assertions
            results[i] = e

    threads = [threading.Thread(target=write, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_writers_without_force_exactly_one_wins(tmp_path, rename_mode):
    out = tmp_path / "soup"
    results = race(out, 3, force=False)
    assert results.count("ok") == 1, results
    losers = [r for r in results if r != "ok"]
    assert all(isinstance(r, OutputExistsError) and r.path == out for r in losers), losers
    assert all("already exists" in str(r) and "--force" in str(r) for r in losers)
    winner = results.index("ok")
    assert (out / "model.safetensors").read_text() == f"writer {winner}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soup"]  # no temporary folders left


def test_concurrent_writers_with_force_leave_one_complete_output(tmp_path, rename_mode):
    out = tmp_path / "soup"
    out.mkdir()
    (out / "model.safetensors").write_text("old")
    results = race(out, 3, force=True)
    assert results == ["ok"] * 3
    assert (out / "model.safetensors").read_text() in {"writer 0", "writer 1", "writer 2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soup"]


def test_forced_replace_interrupted_between_renames_keeps_out(tmp_path, monkeypatch):
    """Fallback (no atomic exchange): an interruption after out was moved aside puts it back."""
    import hfsoup.core.files as files

    monkeypatch.setattr(files, "_renameat2", None)
    out = tmp_path / "soup"
    out.mkdir()
    (out / "model.safetensors").write_text("old")
    real, calls = os.replace, []

    def interrupted(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # out is aside; the new folder is about to move in
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_folder(out, force=True) as tmp:
            (tmp / "model.safetensors").write_text("new")
    assert calls[0][0] == "soup" and calls[1][1] == "soup"
    assert (out / "model.safetensors").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soup"]


def test_forced_replace_is_one_exchange_where_available(tmp_path, monkeypatch):
    import hfsoup.core.files as files

    if files._renameat2 is None:
        pytest.skip("renameat2 is not available on this platform")
    out = tmp_path / "soup"
    out.mkdir()
    (out / "model.safetensors").write_text("old")
    monkeypatch.setattr(files.os, "replace", lambda *a: pytest.fail("moved aside instead of exchanged"))
    with files.atomic_folder(out, force=True) as tmp:
        (tmp / "model.safetensors").write_text("new")
    assert (out / "model.safetensors").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soup"]


# -- 6. --out must not be, contain or lie inside an input -----------------------------------------------------------
@pytest.fixture
def zoo(tmp_path):
    return [save_model_dir(tmp_path / "zoo" / f"m{i}", seed=i) for i in range(2)]


@pytest.mark.parametrize("where,how", [("zoo", "contains the input model folder"),
                                       ("zoo/m0", "is the input model folder"),
                                       ("zoo/m1/soup", "lies inside the input model folder"),
                                       ("link", "contains the input model folder")])
def test_soup_out_overlapping_an_input_is_refused(tmp_path, zoo, capsys, where, how):
    (tmp_path / "link").symlink_to(tmp_path / "zoo", target_is_directory=True)
    before = {p: p.read_bytes() for p in sorted((tmp_path / "zoo").rglob("*")) if p.is_file()}
    out = tmp_path / where
    for command in (["soup", *zoo, "--recipe", "uniform"], ["mix", *zoo]):
        code, _, err = cli(capsys, *command, "--out", out, "--force")
        line = one_line_error(code, err)
        assert f"output '{out}' {how}" in line and "choose an --out outside every input folder" in line, line
        assert {p: p.read_bytes() for p in sorted((tmp_path / "zoo").rglob("*")) if p.is_file()} == before
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["m0", "m1"]


def test_save_soup_refuses_an_input_folder(tmp_path, zoo):
    from hfsoup.hub.format import save_soup
    from hfsoup.recipes.mix import uniform_soup

    soup = uniform_soup(zoo)
    with pytest.raises(OutputOverlapsInputError) as e:
        save_soup(soup, tmp_path / "zoo", force=True)
    assert e.value.path == tmp_path / "zoo" and e.value.input == zoo[0]
    assert all((m / "model.safetensors").is_file() for m in zoo)
    save_soup(soup, tmp_path / "soup")  # a sibling folder is fine
    assert (tmp_path / "soup" / "soup.json").is_file()


# -- 8 and 14. reproducible bytes; published files name folders, not local paths -----------------------------------
def test_identical_mix_runs_give_identical_bytes(tmp_path, zoo):
    import subprocess
    import sys

    outs = [tmp_path / "a" / "soup", tmp_path / "b" / "soup"]
    for out in outs:  # separate processes: safetensors' own writer orders metadata differently in each
        proc = subprocess.run([sys.executable, "-m", "hfsoup", "-q", "mix", *zoo, "--alpha", "0.25", "--out", out],
                              capture_output=True, text=True, env=dict(os.environ, HFSOUP_NO_PROGRESS="1"),
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == ["README.md", "config.json", "model.safetensors", "soup.json"]
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_published_files_record_folder_names_not_paths(tmp_path, cifar_parquet, capsys, monkeypatch):
    a = save_model_dir(tmp_path / "runs" / "a" / "model", seed=0)
    b = save_model_dir(tmp_path / "runs" / "b" / "model", seed=1)
    out = tmp_path / "soup"
    monkeypatch.chdir(tmp_path)  # one reference typed relative, one absolute: both recorded by folder name
    code, _, err = cli(capsys, "mix", "./runs/a/model", b.resolve(), "--out", out, "--eval-split", "test",
                       "--dataset", cifar_parquet.resolve(), "--limit", "8")
    assert code == 0, err
    manifest = json.loads((out / "soup.json").read_text())
    assert [(i["reference"], i["name"], i["path"]) for i in manifest["ingredients"]] == [
        ("a/model", "model", "a/model"), ("b/model", "model", "b/model")]
    assert sorted(manifest["results"]["test"]["models"]) == ["a/model", "b/model", "soup"]
    assert manifest["results"]["test"]["data"]["dataset"] == cifar_parquet.name
    assert folder_metadata(out)["ingredients"] == ["a/model", "b/model"]
    card = (out / "README.md").read_text()
    assert "| 1 | a/model | local |" in card and "| 2 | b/model | local |" in card
    for name in ("soup.json", "README.md", "model.safetensors", "config.json"):
        data = (out / name).read_bytes()[:200_000]
        assert str(tmp_path).encode() not in data and str(tmp_path.resolve()).encode() not in data, name


# -- 22. outputs get the user's umask --------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_outputs_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        out = save_model_dir(tmp_path / "model", seed=0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {name: 0o666 & ~umask for name in ("README.md", "config.json", "model.safetensors")}


def test_atomic_save_overrides_a_private_writer_mode(tmp_path):
    from hfsoup.core.files import atomic_save, current_umask

    def private_writer(p):  # like tempfile / safetensors: a 0600 file
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"x")
        os.close(fd)

    atomic_save(tmp_path / "f.bin", private_writer)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == 0o666 & ~current_umask()
