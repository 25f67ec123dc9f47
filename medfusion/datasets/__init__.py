"""Data sets: the synthetic demo cohort, OpenI chest X-ray reports, and where their files live.

* :mod:`.demo`: the synthetic demo generator (images, reports, DICOM files, the demo cohort).
* :mod:`.openi`: the OpenI (Indiana University) reports: MeSH labels, splits, manifest, FHIR export.
* :mod:`.assets`: finding the optional real assets (OpenI archive, MiniLM weights, pydicom test files).

May import: :mod:`medfusion.ingest` (readers, records, manifests), :mod:`medfusion.fhir`,
:mod:`medfusion.config`, :mod:`medfusion.salt`, :mod:`medfusion.privacy`, :mod:`medfusion.errors`.
Must not import training, scoring, review, models, inference, explain or tracking. Nothing is imported
here; import the submodules directly.
"""
