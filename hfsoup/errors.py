"""Named exceptions, and the one mapping of Hub / ``datasets`` / HTTP client exceptions to them.

Every user-facing failure is an :class:`HfSoupError` whose message says, on one line, what is wrong and what to do;
the CLI prints it without a traceback. As in ``huggingface_hub``, each error also derives from the standard
exception that fits (``except LookupError`` catches an unknown model or dataset, ``except ValueError`` bad weights
or incompatible models, ``except FileExistsError`` an existing output) and carries the fields a caller needs
(``repo_id``, ``path``, ``keys``, …) as attributes, ``None`` when unknown.

:func:`from_client_error` is the only place that turns a client exception into an :class:`HfSoupError`; it
imports the client libraries lazily, so this module stays torch- and network-free.
"""

from __future__ import annotations

import socket
import sys
from typing import Literal

#: The context a client error happened in: reading a model, reading a dataset, or writing to the Hub.
ErrorKind = Literal["model", "dataset", "push"]


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when empty): for one-line user errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class HfSoupError(Exception):
    """Base class of every error hfsoup raises on purpose (bad input, missing files, incompatible models).

    Keyword fields (``repo_id``, ``path``, ``keys``, …) become attributes, for callers that handle the error.
    """

    exit_code = 2

    def __init__(self, message: str = "", **fields):
        super().__init__(message)
        for name, value in fields.items():
            setattr(self, name, value)


class ModelReferenceError(HfSoupError, LookupError):
    """A model reference cannot be resolved: unknown repo, revision or file, missing folder, no network.

    A :class:`LookupError`. Fields: ``reference`` (what the user typed), ``repo_id``, ``revision`` (Hub models),
    ``path`` (local folders, or the file within the repo that is missing).
    """

    reference: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    path: str | None = None

    def __init__(self, message: str = "", *, reference: str | None = None, repo_id: str | None = None,
                 revision: str | None = None, path=None, **fields):
        super().__init__(message, reference=reference, repo_id=repo_id, revision=revision, path=path, **fields)


class OfflineError(ModelReferenceError, ConnectionError):
    """The Hub is unreachable (or ``HF_HUB_OFFLINE=1``) and the requested files are not in the local cache.

    Both a :class:`ModelReferenceError` (a :class:`LookupError`) and a :class:`ConnectionError`.
    """


class UnsafeCheckpointError(ModelReferenceError):
    """Only a pickle checkpoint is available and the user did not opt in with ``allow_pickle``.

    A :class:`ModelReferenceError`: the reference cannot be used as given. ``path`` is the pickle file.
    """


class CorruptFileError(HfSoupError, ValueError):
    """A weights or config file exists but cannot be parsed. A :class:`ValueError`; ``path`` names the file."""

    path: str | None = None

    def __init__(self, message: str = "", *, path=None, **fields):
        super().__init__(message, path=path, **fields)


class UnsafeConfigError(CorruptFileError):
    """A model's ``config.json`` holds an entry hfsoup refuses to pass to timm: an unknown key, an unregistered
    architecture, or one that would make timm load another file (``checkpoint_path``, ``pretrained_cfg.file``…).

    A :class:`CorruptFileError` (so a :class:`ValueError`); ``key`` names the refused entry (``model_args.x``),
    ``path`` the config file when known.
    """

    key: str | None = None

    def __init__(self, message: str = "", *, key: str | None = None, path=None, **fields):
        super().__init__(message, key=key, path=path, **fields)


class IncompatibleModelsError(HfSoupError, ValueError):
    """Ingredients differ in architecture, keys, shapes or dtypes. A :class:`ValueError`; ``keys`` lists the
    differing tensor names (empty for an architecture mismatch)."""

    keys: list[str]

    def __init__(self, message: str = "", *, keys=(), **fields):
        super().__init__(message, keys=sorted(keys), **fields)


class InvalidWeightsError(HfSoupError, ValueError):
    """Mixing weights or alpha values are out of range, non-finite or do not sum to one."""


class NonFiniteError(HfSoupError, ValueError):
    """A tensor (of an ingredient or an average) contains NaN or Inf. A :class:`ValueError`; ``key`` names the
    tensor and ``model`` the ingredient, when known."""

    key: str | None = None
    model: str | None = None

    def __init__(self, message: str = "", *, key: str | None = None, model: str | None = None, **fields):
        super().__init__(message, key=key, model=model, **fields)


class DatasetError(HfSoupError, LookupError):
    """A dataset, split, config, column or corruption cannot be found or used.

    A :class:`LookupError` (what was asked for is not there, or not where it was looked up); fields ``dataset``
    (id or folder), ``column`` and ``split`` when they are what is wrong.
    """

    dataset: str | None = None
    column: str | None = None
    split: str | None = None

    def __init__(self, message: str = "", *, dataset: str | None = None, column: str | None = None,
                 split: str | None = None, **fields):
        super().__init__(message, dataset=dataset, column=column, split=split, **fields)


class OutputExistsError(HfSoupError, FileExistsError):
    """The output location already exists and ``force`` was not given. A :class:`FileExistsError`; ``path`` names
    it (``OSError.filename`` stays unset: it would change the message)."""

    path = None

    def __init__(self, message: str = "", *, path=None, **fields):
        super().__init__(message, path=path, **fields)


class OutputOverlapsInputError(HfSoupError, ValueError):
    """The output folder is, contains or lies inside an input model folder: writing (or ``--force`` replacing) it
    would destroy an input. A :class:`ValueError`; ``path`` is the output, ``input`` the input folder."""

    path = None
    input = None

    def __init__(self, message: str = "", *, path=None, input=None, **fields):
        super().__init__(message, path=path, input=input, **fields)


class PushError(HfSoupError, OSError):
    """Writing to the Hub failed (authentication, permissions, invalid id, rate limits, network).

    An :class:`OSError`, as ``huggingface_hub``'s own ``HfHubHTTPError``: an I/O operation with the Hub failed.
    Deliberately not a :class:`ConnectionError`: most push failures (no write access, an invalid repo id) are not
    about the connection. ``repo_id`` names the repo.
    """

    repo_id: str | None = None

    def __init__(self, message: str = "", *, repo_id: str | None = None, **fields):
        super().__init__(message, repo_id=repo_id, **fields)


class InvalidParameterError(HfSoupError, ValueError):
    """A recipe or command parameter is out of range or of the wrong type; ``parameter`` names it."""

    def __init__(self, message: str, *, parameter: str | None = None):
        super().__init__(message, parameter=parameter)


class InvalidRangeError(InvalidParameterError):
    """A set of integers written as ranges (``--epochs 150-300,50``) is malformed: not numbers, a negative or
    empty range. An :class:`InvalidParameterError`; ``parameter`` names the option, ``spec`` is what was given."""

    spec: str | None = None

    def __init__(self, message: str, *, parameter: str | None = None, spec: str | None = None):
        super().__init__(message, parameter=parameter)
        self.spec = spec


class StorageError(HfSoupError, OSError):
    """A file or folder cannot be written (or read) because of the machine, not of hfsoup: permission denied, a
    read-only file system, a full disk or an exhausted quota. An :class:`OSError`; ``path`` names the file (the
    user's path, not a temporary sibling) and ``errno`` the cause, when known."""

    path: str | None = None

    def __init__(self, message: str = "", *, path=None, **fields):
        super().__init__(message, path=path, **fields)


#: errno -> (what it means, what to do) for the failures of the machine that end a command as a user error.
_STORAGE_ERRNOS: dict[str, tuple[str, str]] = {
    "EACCES": ("permission denied", "check its permissions or choose another location"),
    "EPERM": ("operation not permitted", "check its permissions or choose another location"),
    "EROFS": ("read-only file system", "choose a writable location (e.g. another --out)"),
    "ENOSPC": ("no space left on device", "free some disk space or choose another location"),
    "EDQUOT": ("disk quota exceeded", "free some space or choose another location"),
}


def _user_path(path) -> str:
    """``path`` with hfsoup's hidden temporary siblings (``.NAME.tmp-1a2b3c4d``, see ``hfsoup.core.files``)
    replaced by the path the user named."""
    import re

    return re.sub(r"(^|[\\/])\.([^\\/]+)\.(?:tmp|old)-[0-9a-f]{8}(?=$|[\\/])", r"\1\2", str(path))


def from_os_error(e: BaseException) -> StorageError | None:
    """The one-line :class:`StorageError` for an :class:`OSError` of the machine (EACCES, EPERM, EROFS, ENOSPC,
    EDQUOT), naming the path; ``None`` for any other exception (a bug, or an error mapped elsewhere). Writers
    that are not Python (safetensors, torch) report a full disk in their message only: that is matched too."""
    import errno as errno_module
    import os

    if isinstance(e, HfSoupError):
        return None
    codes = {getattr(errno_module, name): name for name in _STORAGE_ERRNOS if hasattr(errno_module, name)}
    name = codes.get(getattr(e, "errno", None)) if isinstance(e, OSError) else None
    if name is None:  # e.g. SafetensorError("... No space left on device (os error 28) ...")
        text = str(e)
        name = next((n for code, n in codes.items() if n in ("ENOSPC", "EDQUOT", "EROFS")
                     and os.strerror(code) in text), None)
        if name is None:
            return None
    meaning, todo = _STORAGE_ERRNOS[name]
    path = getattr(e, "filename", None) if isinstance(e, OSError) else None
    verb = "cannot access" if name in ("EACCES", "EPERM") else "cannot write"
    where = f" '{_user_path(path)}'" if path is not None else ""
    return StorageError(f"{verb}{where}: {meaning} ({name}): {todo}",
                        path=_user_path(path) if path is not None else None, errno=getattr(e, "errno", None))


# -- client exceptions ---------------------------------------------------------------------------------------------
def http_status(e: BaseException) -> int | None:
    """The HTTP status code of a client exception that carries a response (``HfHubHTTPError`` and friends)."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _loaded(module: str):
    """``module`` if it has been imported, else None: an exception of a library that was never imported cannot
    have been raised, so there is no need to import it (``datasets`` costs seconds)."""
    return sys.modules.get(module)


def _connection_error_types() -> tuple[type[BaseException], ...]:
    """Transport-level failures (no HTTP answer) of the HTTP clients the HF libraries use, whichever is loaded:
    ``httpx2``/``httpx`` transport errors are not :class:`OSError`; ``requests``' are."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror, socket.herror]
    for name in ("httpx2", "httpx"):
        if (module := _loaded(name)) is not None and hasattr(module, "TransportError"):
            types.append(module.TransportError)
    if (requests := _loaded("requests")) is not None:
        types += [requests.ConnectionError, requests.Timeout]
    return tuple(types)


def is_connection_error(e: BaseException) -> bool:
    """True when ``e`` means the Hub could not be reached (no HTTP answer) — not the offline mode, which is a
    choice, not a failure."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    return isinstance(e, _connection_error_types()) and not isinstance(e, OfflineModeIsEnabled)


def client_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes :func:`from_client_error` knows, for a precise ``except client_error_types() as e``
    (the expression is evaluated only when an exception is raised, so the clients are imported lazily)."""
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

    types = [HfHubHTTPError, HFValidationError, EntryNotFoundError, OfflineModeIsEnabled, OSError,
             *_connection_error_types()]
    if (exceptions := _loaded("datasets.exceptions")) is not None:
        types.append(exceptions.DatasetsError)
    return tuple(types)


_KIND_ERRORS: dict[str, type[HfSoupError]] = {"model": ModelReferenceError, "dataset": DatasetError,
                                              "push": PushError}
_LOGIN = "log in with `hf auth login` or set HF_TOKEN"


def from_client_error(e: BaseException, what: str, *, kind: ErrorKind = "model", repo_id: str | None = None,
                      revision: str | None = None, filename: str | None = None, **fields) -> HfSoupError:
    """The one-line :class:`HfSoupError` for an exception of ``huggingface_hub``, ``datasets``, ``httpx`` or
    ``requests`` (or a plain :class:`OSError`): the one place hfsoup maps client errors to messages.

    Args:
        e: the exception caught. An :class:`HfSoupError` is returned as it is.
        what: what was being read or written, as the message starts: ``"org/name@rev"``,
            ``"dataset 'uoft-cs/cifar100'"``, ``"push to 'org/soup'"``.
        kind: ``"model"`` (reading a model: :class:`ModelReferenceError`, or :class:`OfflineError` when the Hub
            cannot be reached), ``"dataset"`` (:class:`DatasetError`) or ``"push"`` (any write:
            :class:`PushError`).
        repo_id, revision, filename: the repo, revision and file concerned (taken from ``e`` when it knows them);
            they go into the message and the error's fields, with any other ``fields``.

    Returns the error; the caller raises it (``raise from_client_error(e, ...) from None``).
    """
    if isinstance(e, HfSoupError):
        return e
    cause = e.__cause__
    if type(e).__name__ == "LocalEntryNotFoundError" and cause is not None and (
            http_status(cause) is not None or is_connection_error(cause)):
        # The client reports a file it could not look up and has not cached as "not in the local cache", raised
        # from the real failure (a server error, a rate limit, no answer): report that one, not "offline".
        return from_client_error(cause, what, kind=kind, repo_id=repo_id, revision=revision, filename=filename,
                                 **fields)
    from huggingface_hub import constants
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, HFValidationError,
                                        LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    repo_id = repo_id or getattr(e, "repo_id", None)
    endpoint = constants.ENDPOINT
    detail = first_line(e)[:200]
    status = http_status(e)
    push = kind == "push"
    cls = _KIND_ERRORS[kind]
    rerun = "; rerun the same command to resume" if push else ""

    # Order matters: GatedRepoError < RepositoryNotFoundError, LocalEntryNotFoundError < EntryNotFoundError,
    # OfflineModeIsEnabled < ConnectionError, and every *NotFoundError < HfHubHTTPError.
    if isinstance(e, GatedRepoError):
        msg = f"{what}: '{repo_id or 'the repo'}' is gated: accept its terms on the Hub and {_LOGIN}"
    elif isinstance(e, RepositoryNotFoundError):
        repo = f"repo '{repo_id}'" if repo_id else "repo"
        if push:
            msg = (f"{what}: {repo} not found or not writable on {endpoint}: check the id, and {_LOGIN} to a token "
                   f"that can write to it")
        else:
            msg = f"{what}: {repo} not found on {endpoint}: check the id, or {_LOGIN} if it is private"
    elif isinstance(e, RevisionNotFoundError):
        where = f" in '{repo_id}'" if repo_id else ""
        msg = (f"{what}: revision '{revision}' not found{where}: check the branch, tag or commit sha" if revision
               else f"{what}: revision not found{where}: check the branch, tag or commit sha")
    elif isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)) or (
            _offline_mode() and is_connection_error(e)):  # `datasets` reports the offline mode as ConnectionError
        if push:
            msg = f"{what}: the Hub cannot be reached (offline, or HF_HUB_OFFLINE=1): go online and rerun"
        else:
            local = "a local folder" if kind == "model" else "a local parquet folder or saved dataset"
            msg = (f"{what} is not in the local HF cache and the Hub cannot be reached (offline or HF_HUB_OFFLINE=1)"
                   f": download it once online, or pass {local}")
        if kind == "model":
            cls = OfflineError
    elif isinstance(e, EntryNotFoundError):
        name = f"'{filename}'" if filename else "a requested file"
        msg = f"{what}: {name} not found in '{repo_id or 'the repo'}'" + (f"@{revision}" if revision else "")
    elif isinstance(e, HFValidationError):
        msg = f"{what}: invalid Hub id or revision: {detail}"
    elif isinstance(e, HfHubHTTPError) and status is not None:
        if status == 401:
            msg = f"{what}: authentication failed (HTTP 401): {_LOGIN} to a valid token"
        elif status == 403:
            msg = (f"{what}: not allowed to write (HTTP 403): {_LOGIN} to a token with write access" if push
                   else f"{what}: access denied (HTTP 403): {_LOGIN} to a token that can read it")
        elif status == 404:
            msg = f"{what}: not found on {endpoint} (HTTP 404): check the id and revision"
        elif status == 429:
            msg = f"{what}: rate limited by the Hub (HTTP 429): wait a few minutes and rerun" + (
                " the same command (it resumes)" if push else "")
        elif status >= 500:
            msg = f"{what}: the Hub answered HTTP {status} (server error): try again later{rerun}"
        else:
            msg = f"{what}: HTTP {status}: {detail}"
    elif is_connection_error(e):
        then = " and rerun the same command to resume" if push else ", or use the local cache with HF_HUB_OFFLINE=1"
        if "Timeout" in type(e).__name__:  # the Hub (or a proxy) accepted the request and never answered
            detail = "no answer in time (HFSOUP_HUB_TIMEOUT sets the limit)"
        msg = f"{what}: cannot reach the Hub at {endpoint} ({type(e).__name__}: {detail}): check your network{then}"
        if kind == "model":
            cls = OfflineError
    elif (ds := _datasets_message(e, what, endpoint, detail)) is not None:
        msg = ds
    else:
        msg = f"{what}: {type(e).__name__}: {detail}"

    if kind == "model":
        fields = {"repo_id": repo_id, "revision": revision, **({"path": filename} if filename else {}), **fields}
    elif kind == "dataset":
        fields = {"dataset": fields.pop("dataset", repo_id), "revision": revision, **fields}
    else:
        fields = {"repo_id": repo_id, "revision": revision, **fields}
    return cls(msg, **fields)


def _offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` as the libraries read it (at their import, into their own constants)."""
    from huggingface_hub import constants

    config = _loaded("datasets.config")
    return bool(constants.HF_HUB_OFFLINE or getattr(config, "HF_HUB_OFFLINE", False))


def _datasets_message(e: BaseException, what: str, endpoint: str, detail: str) -> str | None:
    if (exceptions := _loaded("datasets.exceptions")) is None:
        return None
    if isinstance(e, exceptions.DatasetNotFoundError):
        return f"{what}: not found on {endpoint} or locally ({detail}): check the id, or {_LOGIN} if it is private"
    if isinstance(e, exceptions.DataFilesNotFoundError):
        return f"{what}: no data files found ({detail}): is it a dataset folder or repo?"
    if isinstance(e, exceptions.DatasetsError):
        return f"{what}: {type(e).__name__}: {detail}"
    return None
