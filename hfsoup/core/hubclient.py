"""Bounded Hub calls: a timeout on every ``huggingface_hub`` HTTP request, so that a Hub (or a proxy) that accepts
the connection and never answers, or a network that drops every packet, fails a command in seconds instead of
hanging.

``huggingface_hub`` sends some requests with no timeout at all (``repo_info``, which ``snapshot_download`` calls
first) and retries a failed file-metadata request with a 60 s timeout. :func:`configure` installs, through the
public ``huggingface_hub.set_client_factory``, a client whose request hook caps every request's connect, read,
write and pool timeouts at :func:`hub_timeout` seconds (``HFSOUP_HUB_TIMEOUT``, default 10; the read timeout is the
longest wait for the next bytes, so large downloads are not cut). Requests that send a body (uploads, commits)
may wait :data:`WRITE_READ_FACTOR` times longer for the answer: the Hub processes a commit before it answers.

With these caps a resolution (``snapshot_download``) whose metadata request gets no answer falls back to the
local cache at once (that is the client's behaviour on a connection failure or timeout), so it is bounded by
about one timeout; hfsoup's own retries (:mod:`hfsoup.hub.retry`) retry a Hub that does not answer at most once.
"""

from __future__ import annotations

import os
import threading

from hfsoup.errors import InvalidParameterError

#: The environment variable that sets the timeout of every Hub request, in seconds.
TIMEOUT_ENV = "HFSOUP_HUB_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0
#: Requests that send a body (commits, uploads) wait this many timeouts for the answer.
WRITE_READ_FACTOR = 6

_LOCK = threading.Lock()
_installed = False


def hub_timeout() -> float:
    """The timeout of one Hub request in seconds: ``HFSOUP_HUB_TIMEOUT`` (read at each request), default 10."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise InvalidParameterError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds: set it to e.g. 10 "
                                    f"or unset it", parameter=TIMEOUT_ENV)
    return value


def _cap_timeouts(request) -> None:
    """httpx request hook: cap the request's timeouts (``None`` means "wait forever" to httpx)."""
    cap = hub_timeout()
    timeouts = dict(request.extensions.get("timeout") or {})
    has_body = request.method in ("POST", "PUT", "PATCH")
    for key in ("connect", "read", "write", "pool"):
        limit = cap * WRITE_READ_FACTOR if key == "read" and has_body else cap
        value = timeouts.get(key)
        timeouts[key] = limit if value is None else min(float(value), limit)
    request.extensions = {**request.extensions, "timeout": timeouts}


def configure() -> None:
    """Make every ``huggingface_hub`` request of this process time out (see the module docstring). Idempotent;
    called by hfsoup before its Hub calls. Keeps the client's own request hooks (offline mode, request ids), its
    redirects and the environment's proxies."""
    global _installed
    if _installed:
        return
    with _LOCK:
        if _installed:
            return
        from huggingface_hub import get_session, set_client_factory

        default = get_session()  # the client's own factory: its hooks are what makes HF_HUB_OFFLINE=1 work
        hooks = {name: [h for h in fns if h is not _cap_timeouts] for name, fns in default.event_hooks.items()}

        client_class = type(default)  # httpx2.Client (or httpx.Client for older clients)

        def factory():
            return client_class(event_hooks={**hooks, "request": [*hooks.get("request", []), _cap_timeouts]},
                                 follow_redirects=True, timeout=None)

        set_client_factory(factory)
        _installed = True


__all__ = ["configure", "hub_timeout", "TIMEOUT_ENV", "DEFAULT_TIMEOUT_S", "WRITE_READ_FACTOR"]
