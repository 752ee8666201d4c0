"""``python -m hfsoup.train`` and ``accelerate launch -m hfsoup.train``: the zoo trainer's entry point (the parser
is :mod:`hfsoup.cli.train`)."""

import sys

from hfsoup.cli.app import cpu_processes_hide_gpus
from hfsoup.cli.train import main

if __name__ == "__main__":
    cpu_processes_hide_gpus()  # before torch touches CUDA: CPU processes on a GPU machine
    sys.exit(main())
