"""``python -m hfsoup``: the ``hfsoup`` command line."""

import sys

from hfsoup.cli import main

if __name__ == "__main__":
    sys.exit(main())
