"""Thin entry point: the same as `python -m hfsoup.train` (works with `accelerate launch scripts/train.py …`)."""

import sys

from hfsoup.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
