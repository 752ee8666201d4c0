"""``python -m hfsoup.study run …`` — the entry point for ``accelerate launch -m hfsoup.study run …``.

A thin shim: the command line lives in :mod:`hfsoup.cli.study`.
"""

import sys

from hfsoup.cli.study import main

if __name__ == "__main__":
    sys.exit(main())
