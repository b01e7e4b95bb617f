"""Evaluation layer: ``attnviz eval`` (scores with bootstrap CIs, results.md) and ``attnviz sanity``."""
