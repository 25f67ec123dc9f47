"""MLflow tracking and the model registry: what every run logs, the model as a pyfunc, promotion.

* :mod:`.store`: where runs go (a sqlite store under ``project_dir`` by default, or
  ``MLFLOW_TRACKING_URI``); :func:`~medfusion.tracking.store.connect`, :func:`~medfusion.tracking.store.use_store`.
* :mod:`.runs`: run context (config, manifest hash, git commit, packages), per-epoch and final metrics,
  the checkpoint, the test split's predictions keyed by study pseudonym; never patient data.
  :mod:`.plots`: ROC, calibration and confusion figures.
* :mod:`.pyfunc`: :class:`~medfusion.tracking.pyfunc.MedFusionPyfunc` and
  :func:`~medfusion.tracking.pyfunc.log_pyfunc`; its output is :func:`medfusion.results.result_columns`
  with the same provenance as batch scoring. :mod:`.pyfunc_entry` is the "models from code" file it logs.
* :mod:`.wheel`: the running medfusion code packed as the wheel a logged model ships, and the model's pip
  requirements (that wheel plus the trained dependency versions).
* :mod:`.datasets`: manifests as digest-only MLflow dataset inputs (PHI-free schema and counts).
* :mod:`.promotion`: ``@challenger`` -> ``@champion`` behind evaluation gates on a frozen evaluation set
  (:func:`~medfusion.tracking.promotion.promote_challenger`).

May import: :mod:`medfusion.config`, :mod:`medfusion.ingest` (manifests, records),
:mod:`medfusion.inference`, :mod:`medfusion.results`, :mod:`medfusion.fhir.read` (the pyfunc's FHIR
input), :mod:`medfusion.metrics`, :mod:`medfusion.privacy` (study pseudonyms), :mod:`medfusion.errors`,
and :mod:`medfusion.training.run` only for the run's manifest
(:func:`~medfusion.tracking.promotion.default_manifest_path`). Imported by the orchestration layer
(:mod:`medfusion.workflow`, the CLI) and by :mod:`medfusion.scoring.resolve` (the store). Nothing is
imported here.
"""
