"""Radiology reports in: plain text and CSV files (FHIR through :mod:`medfusion.fhir.read`), their sections.

* :mod:`.read`: :func:`~medfusion.ingest.reports.read.read_reports` and the text/CSV readers (by file type).
* :mod:`.text`: one report's text checked and cleaned into a :class:`~medfusion.ingest.records.Report`.
* :mod:`.sections`: report text split into its sections (findings, impression, ...).

May import: :mod:`medfusion.ingest.records`, :mod:`medfusion.ingest.csv_table`, :mod:`medfusion.fhir.read`,
:mod:`medfusion.errors`, :mod:`medfusion.privacy`. Nothing is imported here.
"""
