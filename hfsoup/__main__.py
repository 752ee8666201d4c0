import sys

from hfsoup.cli import main

sys.exit(main())
