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
each package's docstring names what it may import. This module holds ``__version__`` (the installed
distribution's version, which setuptools-scm takes from git at build time; ``0.0.0+unknown`` when the
package runs without being installed) and one process-wide default: no usage telemetry leaves a
hospital's machines. MLflow (3.2 and later) collects usage data by default, and MONAI imports it even
where medfusion never tracks anything, so ``MLFLOW_DISABLE_TELEMETRY`` defaults to ``true`` here unless
the user set it (as the review launcher turns off Streamlit's usage statistics).
"""

import os as _os
from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

try:
    __version__ = _version("medfusion")
except _NotInstalled:  # imported from a source tree that was never installed
    __version__ = "0.0.0+unknown"

_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
