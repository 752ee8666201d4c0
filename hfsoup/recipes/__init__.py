"""Soup recipes: mix / uniform / weighted, greedy, RADIN, learned, the ensemble baseline, BN recalibration."""
