"""Rebuild the embedded mini-zoo (hfsoup/assets/mini_zoo) with the same code as `hfsoup zoo build`.

    python scripts/build_mini_zoo.py [--work runs/mini_zoo] [--threads 1]

Trains resnet10_cifar_nano on scikit-learn's digits (config: hfsoup/assets/mini_zoo/zoo.yaml), then copies the
trunk checkpoints at branch epochs and every branch into the package, weights stored as float16.
"""

import sys

from hfsoup.cli.demo import rebuild_main

if __name__ == "__main__":
    sys.exit(rebuild_main(sys.argv[1:]))
