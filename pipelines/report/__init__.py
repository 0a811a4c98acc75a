"""Tables and figures of a suite, regenerated from MLflow (the DVC ``report`` stage).

``python -m pipelines.report --suite quick`` reads the experiments ``<suite>/<dataset>`` and writes
``reports/``: README.md (index), tables/*.md|csv|tex and figures/*.png.
"""

from pipelines.report.build import build_report

__all__ = ["build_report"]
