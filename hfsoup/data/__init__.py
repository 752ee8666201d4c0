"""Image datasets through ``datasets``: CIFAR-100 (and mirrors, local parquet), the held-out split, scikit-learn's
digits, CIFAR-100-C reading (:mod:`~hfsoup.data.cifar100c`) and conversion of its original release
(:mod:`~hfsoup.data.cifar100c_release`). Publishing a dataset is the Hub's job (:mod:`hfsoup.hub.datasets`)."""
