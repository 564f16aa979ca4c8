"""Corpora and stores: catalogs, prepare and SegmentStore, grouped splits, schedulers, collect."""
