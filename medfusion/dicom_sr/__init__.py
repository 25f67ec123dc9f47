"""DICOM Structured Report output: one TID 1500 Measurement Report (Comprehensive 3D SR) per scored study.

* :mod:`.codes`: the finding code of each label (SNOMED CT where one exists, else the private scheme
  ``99MEDFUSION``), overridable by a site's YAML/JSON code-map file.
* :mod:`.source`: the source study's headers a report needs (patient and study modules, the
  instances it was scored from), read in the worker that decoded the study.
* :mod:`.write`: :class:`~medfusion.results.ResultRow` + :class:`~.source.SourceStudy` -> SR dataset.

The SR is the one medfusion output that carries patient identifiers: it is written for the PACS, so
it must attach to the right patient and study. Nothing here logs them. See ``docs/dicom_sr.md``.

May import: highdicom, pydicom, :mod:`medfusion.results`, :mod:`medfusion.privacy`,
:mod:`medfusion.errors` and the header reader of :mod:`medfusion.ingest.dicom`. Scoring (and later the
review app) import this package; it imports neither.
"""
