"""The ``hfsoup`` command line: a thin layer over the Python API (entry point ``hfsoup.cli:main``).

One module per command group (:data:`hfsoup.cli.app.COMMAND_GROUPS`), shared option groups in
:mod:`hfsoup.cli.options`, one output sink (tables or ``--json``) in :mod:`hfsoup.cli.output`.
"""

from __future__ import annotations

from hfsoup.cli.app import main

__all__ = ["main"]
