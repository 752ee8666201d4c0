"""Evaluation: accuracy and loss, soup gain, the logit cache and corrupted (CIFAR-100-C) evaluation."""
