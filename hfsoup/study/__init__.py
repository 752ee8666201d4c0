"""The pair study of "When is model souping tasty?": every pairwise soup of a zoo, its similarity, and the report.

Modules (import them directly; this package imports nothing, so ``hfsoup study status`` stays torch-free):

* :mod:`hfsoup.study.inputs` — models from a zoo folder, a zoo manifest or references; the pairs;
* :mod:`hfsoup.study.run` — ``hfsoup study run``: plan, share across processes, compute, merge;
* :mod:`hfsoup.study.engine` — the device engine: weights on the device, soups built in place, evaluation;
* :mod:`hfsoup.study.cache` — the per-model cache of logits, features and scores;
* :mod:`hfsoup.study.similarity` — weight- and output-space similarity of a pair;
* :mod:`hfsoup.study.store` — content ids, append-only shards, deterministic parquet;
* :mod:`hfsoup.study.table` — the tables' columns, merge and status; :mod:`hfsoup.study.publish` — ``study push``;
* :mod:`hfsoup.study.analysis`, :mod:`hfsoup.study.figures`, :mod:`hfsoup.study.report` — the report.
"""
