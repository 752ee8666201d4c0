"""The one retry policy for Hub calls: back off on rate limits (429) and server errors (5xx); retry a Hub that
does not answer (connection refused, unreachable, timed out) once only, after a short wait.

Everything else (401/403, 404, an invalid id, the offline mode) fails at once: retrying cannot fix it. A Hub that
does not answer is retried only once because a refused or dropped connection rarely heals within the minutes a
backoff would wait, and the error says to rerun (pushes resume). Every request is bounded by
``HFSOUP_HUB_TIMEOUT`` (:mod:`hfsoup.core.hubclient`).
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from hfsoup.errors import (ErrorKind, HfSoupError, client_error_types, from_client_error, http_status,
                           is_connection_error)

T = TypeVar("T")

#: Retries of one Hub operation, the first wait (doubled each time) and the longest wait, in seconds.
MAX_RETRIES = 6
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 120.0
#: Retries of one Hub operation when the Hub does not answer at all (no HTTP status): refused, unreachable, timed out.
UNREACHABLE_RETRIES = 1


def retry_after(e: BaseException) -> float | None:
    """The server's ``Retry-After`` (seconds) of an HTTP error, if it sent one as a number."""
    try:
        return max(0.0, float(e.response.headers.get("Retry-After")))  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return None


def is_transient(e: BaseException) -> bool:
    """True for failures worth retrying: HTTP 429 or 5xx, or no answer at all (connection errors, timeouts)."""
    status = http_status(e)
    if status is not None:
        return status == 429 or status >= 500
    return is_connection_error(e)


def backoff_delay(attempt: int, base: float = BACKOFF_BASE_S, max_wait: float = BACKOFF_MAX_S,
                  server_wait: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt + 1``: ``base·2^attempt``, or the server's ``Retry-After``
    when it asks for longer, capped at ``max_wait``."""
    delay = base * 2 ** attempt
    if server_wait is not None:
        delay = max(delay, server_wait)
    return min(max_wait, delay)


def with_retries(fn: Callable[[], T], what: str, *, max_retries: int = MAX_RETRIES, base: float = BACKOFF_BASE_S,
                 max_wait: float = BACKOFF_MAX_S, sleep: Callable[[float], None] = time.sleep,
                 kind: ErrorKind = "push", **fields) -> T:
    """Call ``fn()``; on a transient failure (:func:`is_transient`) wait (:func:`backoff_delay`, honouring
    ``Retry-After``) and call it again, at most ``max_retries`` times.

    A Hub that does not answer at all (a connection error or timeout) is retried at most
    :data:`UNREACHABLE_RETRIES` times in all. A failure that is not transient, or the last one, is raised as the
    one-line :class:`~hfsoup.errors.HfSoupError` of :func:`~hfsoup.errors.from_client_error` (``kind`` ``"push"`` by default; ``fields``, such as ``repo_id``,
    go to it). Exceptions that are not client errors (bugs) propagate unchanged.
    """
    from hfsoup.core.hubclient import configure

    configure()  # every request times out (HFSOUP_HUB_TIMEOUT)
    attempt = no_answer = 0
    while True:
        try:
            return fn()
        except HfSoupError:  # already mapped (some are OSErrors, which the next clause would catch)
            raise
        except client_error_types() as e:
            no_answer += http_status(e) is None
            if not is_transient(e) or attempt >= max_retries or no_answer > UNREACHABLE_RETRIES:
                label = f"{what} (gave up after {attempt + 1} attempts)" if attempt else what
                raise from_client_error(e, label, kind=kind, **fields) from None
            delay = backoff_delay(attempt, base, max_wait, retry_after(e))
        attempt += 1
        sleep(delay)


__all__ = ["with_retries", "is_transient", "retry_after", "backoff_delay", "MAX_RETRIES", "BACKOFF_BASE_S",
           "BACKOFF_MAX_S", "UNREACHABLE_RETRIES"]
