"""Image datasets through ``datasets``: CIFAR-100 (and mirrors, local parquet), the held-out split, scikit-learn's
digits, and CIFAR-100-C (reading, and conversion of the original release)."""
