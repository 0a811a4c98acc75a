"""Pipelines of the RefineNet suite: fetch, prepare, train, sweep, profile, report."""
