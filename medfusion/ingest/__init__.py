"""Readers: a site's files in, PHI-free records out (DICOM images, radiology reports, manifests).

* :mod:`.dicom`: DICOM files -> display-ready tensors with PHI-free metadata; folder scans grouped by study.
* :mod:`.reports`: radiology reports (plain text, CSV; FHIR through :mod:`medfusion.fhir.read`) and their
  sections.
* :mod:`.records`: the records the readers return (:class:`~medfusion.ingest.records.DicomImage`,
  :class:`~medfusion.ingest.records.Report`, :class:`~medfusion.ingest.records.Rejection`).
* :mod:`.csv_table`: reading a CSV of text columns with a clear error.
* :mod:`.linkage`: reports matched to studies (study UID, accession, FHIR reference).
* :mod:`.manifest`: the manifest table (schema, validation, patient-level splits, Parquet/CSV I/O).
* :mod:`.archive`: a raw archive (DICOM tree + reports + labels) -> a manifest (``medfusion build-manifest``).

May import: :mod:`medfusion.errors`, :mod:`medfusion.privacy`, :mod:`medfusion.processes` and
:mod:`medfusion.fhir` (report reading). Must not import training, scoring, review, models, inference,
explain, tracking or :mod:`medfusion.datasets`: they import this package. Nothing is imported here;
import the submodules directly.
"""
