"""Pytest fixtures around the loopback Hub stand-in (tests/hub_server.py).

``hub``: a running :class:`~hub_server.HubServer`, with ``huggingface_hub`` pointed at it in this process
(``constants.ENDPOINT`` and friends patched, a fresh ``HF_HOME``/cache in tmp, ``HF_TOKEN`` set) and
``hub.env``: the environment for ``subprocess`` runs of the ``hfsoup`` CLI. ``hub_offline``: switch this
process to ``HF_HUB_OFFLINE=1`` (same cache). ``run_cli``: run ``python -m hfsoup ...`` in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub_server import DEFAULT_TOKEN, HubServer

__all__ = ["hub", "hub_offline", "run_cli", "HubServer", "DEFAULT_TOKEN", "point_hf_at"]


def _patch_hf(monkeypatch, endpoint: str, home: Path, offline: bool) -> dict:
    """Point the already-imported ``huggingface_hub`` at ``endpoint`` / ``home``; return the matching env."""
    from huggingface_hub import constants

    cache = home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_CACHE": str(cache),
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1" if offline else "0",
           "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0", "HF_TOKEN_PATH": str(home / "token"),
           "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "10"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for name, value in {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home), "HF_HUB_CACHE": str(cache), "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(home / "assets"), "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"), "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": offline, "HF_HUB_DISABLE_XET": True,
    }.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    # Module-level helpers (list_repo_files, model_info, …) are bound to one HfApi built at import time, which
    # captured the endpoint then: point it at the stand-in too.
    from huggingface_hub import hf_api

    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    # `datasets` reads its own copy of the endpoint and offline flag at import time.
    import datasets.config as dconfig

    monkeypatch.setattr(dconfig, "HF_ENDPOINT", endpoint)
    monkeypatch.setattr(dconfig, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
    monkeypatch.setattr(dconfig, "HF_HUB_OFFLINE", offline)
    return env


def point_hf_at(monkeypatch, endpoint: str, home: Path, offline: bool = False) -> dict:
    """Point this process's ``huggingface_hub`` (and ``datasets``) at ``endpoint`` with the HF home ``home``
    (e.g. a closed port, to test a Hub that refuses connections); returns the matching environment."""
    return _patch_hf(monkeypatch, endpoint, home, offline)


@pytest.fixture
def hub(tmp_path_factory, monkeypatch):
    """A running Hub stand-in; this process's ``huggingface_hub`` talks to it; ``hub.env`` is for subprocesses."""
    home = tmp_path_factory.mktemp("hf_home")
    server = HubServer(orgs=("org", "my-org")).start()
    try:
        monkeypatch.setenv("HF_TOKEN", server.token)
        env = _patch_hf(monkeypatch, server.endpoint, home, offline=False)
        env["HF_TOKEN"] = server.token
        server.env = {**os.environ, **env, "HFSOUP_NO_PROGRESS": "1", "TQDM_DISABLE": "1"}
        server.home = home
        server.cache = home / "hub"
        yield server
    finally:
        server.stop()


@pytest.fixture
def hub_offline(hub, monkeypatch):
    """Switch this process (and ``hub.env``) to ``HF_HUB_OFFLINE=1`` against the same cache; returns a function."""
    def go_offline():
        from huggingface_hub import constants

        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        import datasets.config as dconfig

        monkeypatch.setattr(dconfig, "HF_HUB_OFFLINE", True)
        hub.env["HF_HUB_OFFLINE"] = "1"
    return go_offline


@pytest.fixture
def run_cli():
    """``run_cli(args, env, cwd=None) -> CompletedProcess``: the ``hfsoup`` CLI in a subprocess."""
    def run(args, env, cwd=None, timeout=120):
        return subprocess.run([sys.executable, "-m", "hfsoup", *map(str, args)], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)
    return run
