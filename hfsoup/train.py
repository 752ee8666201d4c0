"""``python -m hfsoup.train`` and ``accelerate launch -m hfsoup.train``: the zoo trainer's entry point."""

import sys

from hfsoup.zoo.train import main

if __name__ == "__main__":
    sys.exit(main())
