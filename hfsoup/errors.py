"""Named exceptions. Every user-facing failure is an :class:`HfSoupError` whose message says what is wrong
and what to do; the CLI prints it as one line, without a traceback."""

from __future__ import annotations


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when empty): for one-line user errors."""
    text = str(e)
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


class ModelReferenceError(HfSoupError):
    """A model reference cannot be resolved: unknown repo or revision, missing folder or file, no network."""


class OfflineError(ModelReferenceError):
    """The Hub is unreachable (or ``HF_HUB_OFFLINE=1``) and the requested files are not in the local cache."""


class UnsafeCheckpointError(ModelReferenceError):
    """Only a pickle checkpoint is available and the user did not opt in with ``allow_pickle``."""


class CorruptFileError(HfSoupError):
    """A weights or config file exists but cannot be parsed."""


class IncompatibleModelsError(HfSoupError):
    """Ingredients differ in architecture, keys, shapes or dtypes."""


class InvalidWeightsError(HfSoupError, ValueError):
    """Mixing weights or alpha values are out of range, non-finite or do not sum to one."""


class NonFiniteError(HfSoupError):
    """An averaged tensor contains NaN or Inf."""


class DatasetError(HfSoupError):
    """A dataset cannot be loaded or does not have the expected columns / splits."""


class OutputExistsError(HfSoupError):
    """The output location already exists and ``force`` was not given."""


class PushError(HfSoupError):
    """Uploading to the Hub failed (authentication, permissions, network)."""


class InvalidParameterError(HfSoupError, ValueError):
    """A recipe or command parameter is out of range or of the wrong type; ``parameter`` names it."""

    def __init__(self, message: str, *, parameter: str | None = None):
        super().__init__(message, parameter=parameter)
