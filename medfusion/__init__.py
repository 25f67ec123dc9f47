"""medfusion: multimodal (DICOM image + radiology report) diagnosis assistant.

The flow, one package per stage (see ``docs/architecture.md``): sources -> :mod:`medfusion.ingest`
(DICOM, reports, linkage, manifests; FHIR through :mod:`medfusion.fhir`) -> :mod:`medfusion.processing`
(``PreprocessingSpec``, ``Preprocessor``, ``Sample``, ``Collator``) -> :mod:`medfusion.models` (encoders,
fusion, head; the model card) -> :mod:`medfusion.inference` -> :mod:`medfusion.results` (one result row)
-> Parquet (:mod:`medfusion.scoring`), FHIR, the MLflow pyfunc (:mod:`medfusion.tracking`) and the review
app (:mod:`medfusion.review`). :mod:`medfusion.training` trains, :mod:`medfusion.datasets` holds the demo
cohort and OpenI, :mod:`medfusion.explain` explains predictions.

Dependencies point from the orchestration layer (:mod:`medfusion.cli`, :mod:`medfusion.workflow`) down to
the foundation modules (:mod:`medfusion.errors`, :mod:`medfusion.config`, :mod:`medfusion.results`,
:mod:`medfusion.privacy`, :mod:`medfusion.salt`, :mod:`medfusion.processes`, :mod:`medfusion.metrics`);
each package's docstring names what it may import. This module imports nothing: only ``__version__``.
"""

__version__ = "0.1.0"
