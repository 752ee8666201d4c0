"""``python -m hfsoup.train`` and ``accelerate launch -m hfsoup.train``: the zoo trainer's entry point (the parser
is :mod:`hfsoup.cli.train`)."""

import sys

from hfsoup.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
