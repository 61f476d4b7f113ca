"""Lineage registry: dataset cards, model cards, run manifests, lifecycle, and the home layout."""
