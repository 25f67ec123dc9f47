"""Training: the loop (AMP, early stopping, calibration, thresholds), its cached dataset, checkpoints.

Entry points: :func:`medfusion.training.run.train_from_config` (a YAML file or Config) and
:func:`medfusion.training.engine.train` (a Config and records already split).

May import: :mod:`medfusion.config`, :mod:`medfusion.ingest` (records, manifests), :mod:`medfusion.datasets`
(the demo cohort), :mod:`medfusion.processing` (samples are made exactly as at inference), :mod:`medfusion.models`,
:mod:`medfusion.metrics`, :mod:`medfusion.errors`. Nothing outside training (inference, scoring, explain,
review, tracking) imports from here; only the orchestration layer (:mod:`medfusion.workflow`, the CLI
and ``benchmarks/``) starts a training run.
"""
