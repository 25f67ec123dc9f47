"""Training engine, data pipeline, metrics and calibration.

Entry points: :func:`medfusion.training.run.train_from_config` (a YAML file or Config) and
:func:`medfusion.training.engine.train` (a Config and records already split).
"""
