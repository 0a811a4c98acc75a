"""The training engine: data pipeline, `train()`, evaluation, metrics, measurements, checkpoints.

Import from the submodules (the package imports nothing heavy):
``from pipelines.engine.train import train``, ``from pipelines.engine.config import TrainConfig``,
``from pipelines.engine.evaluate import evaluate``, ``from pipelines.engine.measure import measure``.
"""
