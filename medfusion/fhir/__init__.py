"""FHIR R5 in and out: the one place medfusion reads or writes FHIR resources.

- :mod:`medfusion.fhir.codes`: code systems, codes and reference fragments (standard library only).
- :mod:`medfusion.fhir.read`: DiagnosticReports (JSON, Bundle, NDJSON) -> reports.
- :mod:`medfusion.fhir.write`: reports, model results and reviewed labels -> validated resources,
  stable resource ids (:func:`medfusion.fhir.write.stable_id`), NDJSON and Bundle files.

May import ``fhir.resources``, pydantic, :mod:`medfusion.results`, :mod:`medfusion.privacy`,
:mod:`medfusion.errors` and the report records of :mod:`medfusion.ingest` (records, reports.text,
reports.sections); nothing from scoring, review, tracking or training, which import this package instead.
Import the submodules directly; this ``__init__`` imports nothing.
"""
