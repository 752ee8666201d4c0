"""The Hub spine through the loopback stand-in (tests/hub_server.py) with the real ``huggingface_hub`` client:
push, pull by id and pinned sha, mix from Hub ids, soup cards, timm ``hf-hub:`` loading, offline cache, errors."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import save_model_dir


def _state(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def cli(capsys, *args):
    """Run the CLI in-process (fast); returns (exit code, stdout, stderr)."""
    from hfsoup.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _front_matter(text: str) -> dict:
    import yaml

    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.fixture
def pushed(hub, tmp_path):
    """Two tiny models pushed as org/a and org/b through the Python API."""
    from hfsoup.hub.upload import push

    out = {}
    for i, name in enumerate(("org/a", "org/b")):
        folder = save_model_dir(tmp_path / name.split("/")[1], seed=i, bn_steps=1)
        out[name] = (folder, push(folder, name))
    return out


# -- stand-in sanity -------------------------------------------------------------------------------------------
def test_stand_in_basic_api(hub, tmp_path):
    from huggingface_hub import HfApi, file_exists, hf_hub_download, list_repo_files, model_info

    api = HfApi()
    assert api.whoami()["name"] == hub.user
    api.create_repo("org/x")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.txt").write_text("hello")
    (tmp_path / "f" / "sub").mkdir()
    (tmp_path / "f" / "sub" / "b.txt").write_text("world")
    info = api.upload_folder(folder_path=str(tmp_path / "f"), repo_id="org/x")
    assert len(info.oid) == 40
    assert sorted(list_repo_files("org/x")) == [".gitattributes", "a.txt", "sub/b.txt"]
    assert model_info("org/x").sha == info.oid
    assert file_exists("org/x", "sub/b.txt") and not file_exists("org/x", "nope.txt")
    assert open(hf_hub_download("org/x", "sub/b.txt")).read() == "world"
    # unchanged files are not re-committed (preupload reports the remote oid)
    again = api.upload_folder(folder_path=str(tmp_path / "f"), repo_id="org/x")
    assert again.oid == info.oid and len(hub.commits("org/x")) == 2
    c = api.create_collection("Zoo", namespace="org")
    api.add_collection_item(c.slug, "org/x", "model", note="hi")
    assert [i.item_id for i in api.get_collection(c.slug).items] == ["org/x"]
    assert api.create_collection("Zoo", namespace="org", exists_ok=True).slug == c.slug


def test_stand_in_failure_injection(hub, tmp_path):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    api.create_repo("org/y")
    (tmp_path / "a.txt").write_text("x")
    hub.fail_next(1, status=429)
    with pytest.raises(HfHubHTTPError) as e:
        api.upload_file(path_or_fileobj=str(tmp_path / "a.txt"), path_in_repo="a.txt", repo_id="org/y")
    assert e.value.response.status_code == 429
    api.upload_file(path_or_fileobj=str(tmp_path / "a.txt"), path_in_repo="a.txt", repo_id="org/y")
    assert hub.count("POST", "/commit/") == 2


# -- push / pull -----------------------------------------------------------------------------------------------
def test_push_and_pull_by_id_and_sha(pushed, hub):
    from hfsoup.core.references import resolve

    folder, info = pushed["org/a"]
    assert info.commit == hub.head("org/a").sha
    assert set(hub.head("org/a").files) >= {"model.safetensors", "config.json", "README.md"}
    r = resolve("org/a")
    assert r.commit == info.commit
    assert all(torch.equal(v, _state(folder)[k]) for k, v in _state(r.folder).items())
    # a newer commit on main; the pinned sha still gives the old weights
    from hfsoup.hub.upload import push

    newer = save_model_dir(folder.parent / "a2", seed=7)
    info2 = push(newer, "org/a")
    assert info2.commit != info.commit
    pinned = resolve(f"org/a@{info.commit}")
    assert pinned.commit == info.commit
    assert torch.equal(_state(pinned.folder)["fc.weight"], _state(folder)["fc.weight"])
    assert resolve("org/a").commit == info2.commit


def test_cli_push_subprocess_token_never_printed(hub, tmp_path, run_cli):
    folder = save_model_dir(tmp_path / "m", seed=3)
    p = run_cli(["push", folder, "org/cli-model", "--json"], hub.env)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["commit"] == hub.head("org/cli-model").sha
    assert hub.token not in p.stdout + p.stderr


def test_cli_mix_from_hub_ids_records_shas_and_push_soup(pushed, hub, tmp_path, capsys):
    sha_a, sha_b = pushed["org/a"][1].commit, pushed["org/b"][1].commit
    out = tmp_path / "soup"
    rc, _, err = cli(capsys, "mix", "org/a", f"org/b@{sha_b}", "--alpha", "0.5", "--out", out)
    assert rc == 0, err
    manifest = json.loads((out / "soup.json").read_text())
    assert sorted(json.dumps(manifest["ingredients"]).count(s) > 0 for s in (sha_a, sha_b)) == [True, True]
    a, b, s = _state(pushed["org/a"][0]), _state(pushed["org/b"][0]), _state(out)
    assert torch.allclose(s["fc.weight"], 0.5 * a["fc.weight"] + 0.5 * b["fc.weight"], atol=1e-6)
    # push the soup and pull it back
    rc, stdout, err = cli(capsys, "push", out, "org/soup-ab", "--json")
    assert rc == 0, err
    assert hub.token not in stdout + err
    assert json.loads(stdout)["commit"] == hub.head("org/soup-ab").sha
    card = hub.head("org/soup-ab").files["README.md"].decode()
    fm = _front_matter(card)
    assert fm["base_model_relation"] == "merge"
    assert set(fm["base_model"]) == {"org/a", "org/b"}
    assert {"merge", "model-soup"} <= set(fm["tags"])
    assert fm["library_name"] == "timm"
    assert "soup.json" in hub.head("org/soup-ab").files
    from hfsoup.core.references import resolve

    back = resolve("org/soup-ab")
    assert torch.equal(_state(back.folder)["fc.weight"], s["fc.weight"])
    assert (back.folder / "config.json").is_file()


def test_timm_hf_hub_reload_bit_exact(pushed):
    import timm

    import hfsoup  # noqa: F401  (registers the CIFAR models)

    folder, info = pushed["org/a"]
    model = timm.create_model(f"hf-hub:org/a@{info.commit}", pretrained=True)
    ref = _state(folder)
    got = model.state_dict()
    assert set(got) == set(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_create_pr_and_private(hub, tmp_path, capsys, monkeypatch):
    from huggingface_hub import HfApi

    folder = save_model_dir(tmp_path / "m", seed=1)
    rc, _, err = cli(capsys, "push", folder, "org/priv", "--private", "--json")
    assert rc == 0, err
    assert hub.repos[("model", "org/priv")].private
    assert HfApi().model_info("org/priv").private
    other = save_model_dir(tmp_path / "m2", seed=2)
    rc, stdout, err = cli(capsys, "push", other, "org/priv", "--create-pr", "--json")
    assert rc == 0, err
    doc = json.loads(stdout)
    assert doc["pr_url"].endswith("/discussions/1")
    repo = hub.repos[("model", "org/priv")]
    assert repo.refs["refs/pr/1"] == doc["commit"] and repo.refs["main"] != doc["commit"]
    # a private repo is invisible without the token
    monkeypatch.delenv("HF_TOKEN")
    rc, _, err = cli(capsys, "mix", "org/priv", "org/priv", "--alpha", "0.5", "--out", tmp_path / "s")
    assert rc == 2 and "org/priv" in err and len(err.strip().splitlines()) == 1


# -- errors ----------------------------------------------------------------------------------------------------
def test_unknown_repo_and_revision_one_line(pushed, hub, tmp_path, capsys):
    from hfsoup.errors import ModelReferenceError
    from hfsoup.core.references import resolve

    with pytest.raises(ModelReferenceError, match="org/missing"):
        resolve("org/missing")
    with pytest.raises(ModelReferenceError, match="revision 'nope'"):
        resolve("org/a@nope")
    rc, _, err = cli(capsys, "mix", "org/missing", "org/a", "--out", tmp_path / "s")
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "org/missing" in err and "Traceback" not in err
    rc, _, err = cli(capsys, "mix", "org/a@nope", "org/b", "--out", tmp_path / "s")
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "nope" in err


def test_offline_cache(pushed, hub, hub_offline, tmp_path, run_cli, capsys):
    from hfsoup.errors import OfflineError
    from hfsoup.core.references import resolve

    sha = pushed["org/a"][1].commit
    online = resolve("org/a")  # fills the cache
    resolve(f"org/b@{pushed['org/b'][1].commit}")
    hub_offline()
    n = len(hub.requests)
    assert resolve("org/a").commit == sha == online.commit
    rc, _, err = cli(capsys, "mix", "org/a", f"org/b@{pushed['org/b'][1].commit}", "--out", tmp_path / "s")
    assert rc == 0, err
    p = run_cli(["mix", "org/a", "org/never-cached", "--out", tmp_path / "s2"], hub.env)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "org/never-cached" in lines[0] and "Traceback" not in p.stderr
    assert "HF_HUB_OFFLINE" in lines[0]
    with pytest.raises(OfflineError, match="not in the local HF cache") as e:
        resolve("org/never-cached")
    assert isinstance(e.value, ConnectionError) and isinstance(e.value, LookupError)
    assert (e.value.repo_id, e.value.reference) == ("org/never-cached", "org/never-cached")
    assert len(hub.requests) == n  # offline means offline


# -- one upload path -------------------------------------------------------------------------------------------
def test_push_to_a_revision_branch_that_does_not_exist_creates_it(pushed, hub, tmp_path, capsys):
    """The Hub does not create a branch on commit: push creates it (from main), commits there, leaves main."""
    from hfsoup.hub.upload import UploadResult, push

    main_before = hub.head("org/a").sha
    folder = save_model_dir(tmp_path / "dev", seed=11)
    info = push(folder, "org/a", revision="dev")
    assert isinstance(info, UploadResult) and info.repo_type == "model"
    repo = hub.repos[("model", "org/a")]
    assert repo.refs["dev"] == info.commit and repo.refs["main"] == main_before
    assert hub.head("org/a", "dev").files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert info.files == ["README.md", "config.json", "model.safetensors"]
    # the CLI, to a new branch of a new repo; then again to the existing branch
    rc, stdout, err = cli(capsys, "push", folder, "org/fresh", "--revision", "exp-1", "--json")
    assert rc == 0, err
    doc = json.loads(stdout)
    fresh = hub.repos[("model", "org/fresh")]
    assert fresh.refs["exp-1"] == doc["commit"] and set(fresh.resolve("main").files) == {".gitattributes"}
    other = save_model_dir(tmp_path / "dev2", seed=12)
    rc, stdout, err = cli(capsys, "push", other, "org/fresh", "--revision", "exp-1", "--json")
    assert rc == 0, err
    assert fresh.commits[fresh.refs["exp-1"]].parents == [doc["commit"]]


def test_push_refuses_what_the_hub_cannot_do(pushed, hub):
    from hfsoup.errors import InvalidParameterError
    from hfsoup.hub.upload import push

    folder = pushed["org/a"][0]
    n = len(hub.requests)
    with pytest.raises(InvalidParameterError, match="commit sha"):
        push(folder, "org/a", revision="0123456789abcdef0123456789abcdef01234567")
    with pytest.raises(InvalidParameterError, match="--create-pr or --revision"):
        push(folder, "org/a", revision="dev", create_pr=True)
    assert len(hub.requests) == n  # refused before any request


def test_push_errors_are_one_line_push_errors(pushed, hub, monkeypatch):
    from hfsoup.errors import PushError
    from hfsoup.hub.upload import push

    folder = pushed["org/a"][0]
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(PushError, match="authentication failed \\(HTTP 401\\)") as e:
        push(folder, "org/a")
    assert e.value.repo_id == "org/a" and len(str(e.value).splitlines()) == 1
    assert "hf_wrong" not in str(e.value)


def test_upload_folder_retries_transient_failures(hub, tmp_path):
    from hfsoup.hub.upload import upload_folder

    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "README.md").write_text("card")
    (tmp_path / "d" / "sub" / "x.parquet").write_bytes(b"data")
    hub.fail_next(2, status=503)
    res = upload_folder(tmp_path / "d", "org/ds", repo_type="dataset", backoff=0.0)
    assert hub.count("POST", "/commit/") == 3  # two failures, then the commit
    assert res.files == ["README.md", "sub/x.parquet"] and res.commit == hub.head("org/ds", repo_type="dataset").sha
    (tmp_path / "d" / "README.md").write_text("card v2")
    big = upload_folder(tmp_path / "d", "org/ds", repo_type="dataset", large=True, revision="v2")
    assert big.commit == hub.head("org/ds", "v2", repo_type="dataset").sha != res.commit
    assert hub.head("org/ds", "v2", repo_type="dataset").files["README.md"] == b"card v2"


# -- the retry policy ------------------------------------------------------------------------------------------
def _http(status: int, headers: dict | None = None):
    from httpx_compat import httpx as httpx2
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("POST", "https://hub.test/api/models/org/x/commit/main")
    return HfHubHTTPError(f"{status} error", response=httpx2.Response(status, headers=headers, request=request))


class Flaky:
    """Raises the given exceptions in turn, then returns "ok"."""

    def __init__(self, *errors):
        self.errors, self.calls = list(errors), 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_with_retries_honours_retry_after_on_429():
    from hfsoup.hub.retry import with_retries

    waits: list[float] = []
    fn = Flaky(_http(429, {"Retry-After": "7"}), _http(429, {"Retry-After": "0"}))
    assert with_retries(fn, "push", base=1.0, sleep=waits.append) == "ok"
    assert fn.calls == 3 and waits == [7.0, 2.0]  # the server's wait, then base·2^1 (Retry-After 0 is shorter)


def test_with_retries_backs_off_on_5xx_and_connection_errors_then_succeeds():
    from httpx_compat import httpx as httpx2

    from hfsoup.hub.retry import with_retries

    waits: list[float] = []
    fn = Flaky(_http(500), httpx2.ConnectError("refused"), _http(502))
    assert with_retries(fn, "push", base=2.0, max_wait=5.0, sleep=waits.append) == "ok"
    assert waits == [2.0, 4.0, 5.0]  # doubled each time, capped at max_wait


def test_with_retries_does_not_retry_what_cannot_succeed():
    from huggingface_hub.errors import OfflineModeIsEnabled

    from hfsoup.errors import HfSoupError, ModelReferenceError, PushError
    from hfsoup.hub.retry import with_retries

    waits: list[float] = []
    fn = Flaky(_http(404))
    with pytest.raises(PushError, match="^push org/x: not found") as e:
        with_retries(fn, "push org/x", sleep=waits.append, repo_id="org/x")
    assert fn.calls == 1 and waits == [] and e.value.repo_id == "org/x"
    fn = Flaky(OfflineModeIsEnabled("offline"))
    with pytest.raises(ModelReferenceError, match="not in the local HF cache"):
        with_retries(fn, "org/x", kind="model", sleep=waits.append)
    fn = Flaky(HfSoupError("already one line"))
    with pytest.raises(HfSoupError, match="^already one line$"):
        with_retries(fn, "x", sleep=waits.append)
    fn = Flaky(TypeError("a bug"))  # not a client error: propagates as it is
    with pytest.raises(TypeError, match="a bug"):
        with_retries(fn, "x", sleep=waits.append)
    assert waits == [] and fn.calls == 1


def test_with_retries_gives_up_after_max_retries():
    from hfsoup.errors import PushError
    from hfsoup.hub.retry import with_retries

    waits: list[float] = []
    fn = Flaky(*[_http(503)] * 5)
    with pytest.raises(PushError, match=r"push org/x \(gave up after 3 attempts\): the Hub answered HTTP 503.*rerun"):
        with_retries(fn, "push org/x", max_retries=2, base=0.5, sleep=waits.append)
    assert fn.calls == 3 and waits == [0.5, 1.0]
