"""Fixtures of the report tests; the fixture store itself lives in report_fixture.py."""

from report_fixture import store  # noqa: F401  (session-scoped fixture MLflow store)
