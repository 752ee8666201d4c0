"""``python -m hfsoup.study run …`` — the entry point for ``accelerate launch -m hfsoup.study run …``.

A thin shim: the command line lives in :mod:`hfsoup.cli.study`.
"""

import sys

from hfsoup.cli.app import cpu_processes_hide_gpus
from hfsoup.cli.study import main

if __name__ == "__main__":
    cpu_processes_hide_gpus()  # before torch touches CUDA: CPU processes on a GPU machine
    sys.exit(main())
