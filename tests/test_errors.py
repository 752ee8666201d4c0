"""The error hierarchy (stdlib bases, fields) and the one mapping of client exceptions (:func:`from_client_error`),
on exceptions of ``huggingface_hub``, ``datasets``, ``httpx2`` and ``requests`` constructed here. No network."""

from __future__ import annotations

import pickle
import socket

from httpx_compat import httpx as httpx2
import pytest
import requests
from datasets.exceptions import DataFilesNotFoundError, DatasetGenerationError, DatasetNotFoundError
from huggingface_hub import constants
from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, HFValidationError,
                                    LocalEntryNotFoundError, OfflineModeIsEnabled, RemoteEntryNotFoundError,
                                    RepositoryNotFoundError, RevisionNotFoundError)

from hfsoup.errors import (CorruptFileError, DatasetError, HfSoupError, IncompatibleModelsError,
                           InvalidParameterError, InvalidWeightsError, ModelReferenceError, NonFiniteError,
                           OfflineError, OutputExistsError, PushError, UnsafeCheckpointError, from_client_error)


def http_error(cls, status: int, message: str = "boom", headers: dict | None = None):
    request = httpx2.Request("GET", "https://hub.test/api/models/org/x")
    return cls(f"{status} Client Error.\n\n{message}", response=httpx2.Response(status, headers=headers,
                                                                                  request=request))


# -- the hierarchy ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,bases", [
    (ModelReferenceError, (LookupError,)),
    (OfflineError, (ModelReferenceError, LookupError, ConnectionError, OSError)),
    (UnsafeCheckpointError, (ModelReferenceError,)),
    (CorruptFileError, (ValueError,)),
    (IncompatibleModelsError, (ValueError,)),
    (InvalidWeightsError, (ValueError,)),
    (NonFiniteError, (ValueError,)),
    (DatasetError, (LookupError,)),
    (OutputExistsError, (FileExistsError, OSError)),
    (PushError, (OSError,)),
    (InvalidParameterError, (ValueError,)),
])
def test_errors_have_the_stdlib_base_that_fits(cls, bases):
    assert issubclass(cls, HfSoupError) and all(issubclass(cls, b) for b in bases)
    assert cls.exit_code == 2


def test_push_error_is_not_a_connection_error():
    """Documented choice: most push failures (no write access, invalid id) are not about the connection."""
    assert not issubclass(PushError, ConnectionError) and not issubclass(DatasetError, ValueError)


def test_fields_are_attributes_and_default_to_none():
    e = OfflineError("x", repo_id="org/a", revision="v1", reference="org/a@v1")
    assert (e.repo_id, e.revision, e.reference, e.path, str(e)) == ("org/a", "v1", "org/a@v1", None, "x")
    assert ModelReferenceError("y").repo_id is None and DatasetError("z").column is None
    assert IncompatibleModelsError("k", keys={"b.w", "a.w"}).keys == ["a.w", "b.w"]
    n = NonFiniteError("nan", key="fc.weight", model="org/a")
    assert (n.key, n.model) == ("fc.weight", "org/a")
    o = OutputExistsError("exists: pass --force", path="/tmp/out")
    assert str(o) == "exists: pass --force" and o.path == "/tmp/out"  # OSError's formatting stays out of it
    assert PushError("p", repo_id="org/s").repo_id == "org/s"
    assert HfSoupError("m", anything=3).anything == 3
    assert InvalidParameterError("bad", parameter="alpha").parameter == "alpha"


def test_errors_pickle_with_their_fields():
    """Errors cross process boundaries (parallel pulls, study workers)."""
    for e in (OfflineError("x", repo_id="org/a"), OutputExistsError("o", path="/p"), PushError("p", repo_id="o/r"),
              DatasetError("d", dataset="ds", column="img")):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and back.__dict__ == e.__dict__


# -- from_client_error ---------------------------------------------------------------------------------------------
def test_hfsoup_errors_pass_through():
    e = DatasetError("already mapped")
    assert from_client_error(e, "x", kind="push") is e


def test_repository_not_found_per_kind():
    e = http_error(RepositoryNotFoundError, 404)
    m = from_client_error(e, "org/missing", repo_id="org/missing", reference="org/missing")
    assert type(m) is ModelReferenceError and isinstance(m, LookupError)
    assert str(m) == (f"org/missing: repo 'org/missing' not found on {constants.ENDPOINT}: check the id, or log in "
                      f"with `hf auth login` or set HF_TOKEN if it is private")
    assert (m.repo_id, m.reference) == ("org/missing", "org/missing")
    d = from_client_error(e, "dataset 'org/ds'", kind="dataset", repo_id="org/ds")
    assert type(d) is DatasetError and d.dataset == "org/ds" and "not found" in str(d)
    p = from_client_error(e, "push to 'org/x'", kind="push", repo_id="org/x")
    assert type(p) is PushError and p.repo_id == "org/x" and "not writable" in str(p)


def test_gated_before_not_found():
    m = from_client_error(http_error(GatedRepoError, 401), "org/gated", repo_id="org/gated")
    assert type(m) is ModelReferenceError and "is gated: accept its terms" in str(m)


def test_revision_not_found():
    m = from_client_error(http_error(RevisionNotFoundError, 404), "org/a@nope", repo_id="org/a", revision="nope")
    assert str(m) == "org/a@nope: revision 'nope' not found in 'org/a': check the branch, tag or commit sha"
    assert m.revision == "nope"


def test_local_entry_not_found_is_offline_not_entry_not_found():
    """LocalEntryNotFoundError subclasses EntryNotFoundError: it must be read as "offline", not "missing file"."""
    e = LocalEntryNotFoundError("Cannot find the requested files in the disk cache")
    assert isinstance(e, EntryNotFoundError)
    m = from_client_error(e, "org/a", repo_id="org/a")
    assert type(m) is OfflineError and isinstance(m, ConnectionError)
    assert str(m).startswith("org/a is not in the local HF cache and the Hub cannot be reached")
    assert "HF_HUB_OFFLINE=1" in str(m)
    d = from_client_error(e, "dataset 'org/ds'", kind="dataset")
    assert type(d) is DatasetError and "local parquet folder" in str(d)
    p = from_client_error(OfflineModeIsEnabled("offline"), "push to 'org/x'", kind="push")
    assert type(p) is PushError and "go online" in str(p)
    assert type(from_client_error(OfflineModeIsEnabled("off"), "org/a")) is OfflineError


def test_entry_not_found_remote_and_plain():
    m = from_client_error(http_error(RemoteEntryNotFoundError, 404), "org/a", repo_id="org/a",
                          filename="zoo.json")
    assert str(m) == "org/a: 'zoo.json' not found in 'org/a'" and m.path == "zoo.json"
    assert type(from_client_error(EntryNotFoundError("gone"), "org/a")) is ModelReferenceError


def test_validation_error():
    e = HFValidationError("Repo id must be in the form 'repo_name' or 'namespace/repo_name': 'a/b/c'.")
    p = from_client_error(e, "push to 'a/b/c'", kind="push", repo_id="a/b/c")
    assert type(p) is PushError and str(p).startswith("push to 'a/b/c': invalid Hub id or revision: Repo id must")


@pytest.mark.parametrize("status,kind,fragment", [
    (401, "model", "authentication failed (HTTP 401): log in with `hf auth login`"),
    (403, "push", "not allowed to write (HTTP 403): log in with `hf auth login` or set HF_TOKEN to a token with "
                  "write access"),
    (403, "model", "access denied (HTTP 403)"),
    (404, "dataset", "not found on"),
    (429, "push", "rate limited by the Hub (HTTP 429): wait a few minutes and rerun the same command"),
    (500, "model", "the Hub answered HTTP 500 (server error): try again later"),
    (503, "push", "the Hub answered HTTP 503 (server error): try again later; rerun the same command to resume"),
    (418, "model", "HTTP 418: 418 Client Error."),
])
def test_http_status_codes(status, kind, fragment):
    m = from_client_error(http_error(HfHubHTTPError, status), "thing", kind=kind)
    assert type(m) is {"model": ModelReferenceError, "dataset": DatasetError, "push": PushError}[kind]
    assert str(m).startswith("thing: ") and fragment in str(m) and len(str(m).splitlines()) == 1


def _online(monkeypatch) -> None:
    """Online mode whatever the environment says (an ambient ``HF_HUB_OFFLINE=1`` was read into
    ``huggingface_hub``'s and ``datasets``' constants at their import, and hfsoup reads both)."""
    import datasets.config as dconfig

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(dconfig, "HF_HUB_OFFLINE", False)


@pytest.mark.parametrize("exc", [
    httpx2.ConnectError("[Errno 111] Connection refused"),
    httpx2.ReadTimeout("timed out"),
    requests.ConnectionError("refused"),
    requests.Timeout("slow"),
    ConnectionRefusedError(111, "Connection refused"),
    socket.gaierror(-2, "Name or service not known"),
], ids=lambda e: type(e).__name__)
def test_connection_errors(exc, monkeypatch):
    _online(monkeypatch)
    m = from_client_error(exc, "org/a", repo_id="org/a")
    assert type(m) is OfflineError
    assert str(m).startswith(f"org/a: cannot reach the Hub at {constants.ENDPOINT} ({type(exc).__name__}")
    p = from_client_error(exc, "push to 'org/a'", kind="push")
    assert type(p) is PushError and str(p).endswith("check your network and rerun the same command to resume")


def test_connection_error_in_offline_mode_is_the_offline_message(monkeypatch):
    """``datasets`` reports HF_HUB_OFFLINE as a plain ConnectionError; the message must not say "check your
    network"."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    d = from_client_error(ConnectionError("Couldn't reach 'org/ds' on the Hub (OfflineModeIsEnabled)"),
                          "dataset 'org/ds'", kind="dataset", dataset="org/ds")
    assert type(d) is DatasetError and str(d).startswith("dataset 'org/ds' is not in the local HF cache")


def test_datasets_exceptions():
    nf = from_client_error(DatasetNotFoundError("Dataset 'org/ds' doesn't exist on the Hub"), "dataset 'org/ds'",
                           kind="dataset", dataset="org/ds")
    assert type(nf) is DatasetError and "not found" in str(nf) and nf.dataset == "org/ds"
    files = from_client_error(DataFilesNotFoundError("No (supported) data files found in ./x"), "dataset './x'",
                              kind="dataset")
    assert "no data files found" in str(files)
    gen = from_client_error(DatasetGenerationError("An error occurred while generating the dataset"), "dataset 'd'",
                            kind="dataset")
    assert str(gen) == "dataset 'd': DatasetGenerationError: An error occurred while generating the dataset"


def test_other_exceptions_are_one_line_with_their_type():
    m = from_client_error(PermissionError(13, "Permission denied"), "org/a")
    assert type(m) is ModelReferenceError and str(m) == "org/a: PermissionError: [Errno 13] Permission denied"
    long = from_client_error(ValueError("x" * 500 + "\nsecond line"), "dataset 'd'", kind="dataset")
    assert len(str(long)) < 250 and "second line" not in str(long)


def test_the_hub_path_is_torch_free():
    """`hfsoup push` and dataset pushes read files only: the upload path and the error mapping import no torch."""
    import subprocess
    import sys

    code = ("import sys; import hfsoup.hub.upload, hfsoup.hub.datasets, hfsoup.hub.retry, hfsoup.hub.format;"
            "from hfsoup.errors import from_client_error; from_client_error(OSError('x'), 'y');"
            "print(sorted(m for m in ('torch', 'timm', 'torchvision', 'datasets') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
