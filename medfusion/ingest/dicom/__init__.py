"""DICOM in: files -> display-ready tensors with PHI-free metadata, bounded in bytes, pixels and time.

* :mod:`.read`: :func:`~medfusion.ingest.dicom.read.read_dicom` (one file) and
  :func:`~medfusion.ingest.dicom.read.read_dicom_header` (metadata only); the pipeline is described there.
* :mod:`.series`: :func:`~medfusion.ingest.dicom.series.read_series`, single-frame slices -> one volume.
* :mod:`.limits`: the pixel and byte bounds (:func:`~medfusion.ingest.dicom.limits.byte_limit`).
* :mod:`.guard`: every failure -> :class:`~medfusion.errors.DicomReadError`; pydicom's warnings redacted.
* :mod:`.header`: bounded header parsing and the PHI-free metadata.
* :mod:`.decode`: pixel decoding and the modality stage; :mod:`.display`: the VOI stage and inversion.
* :mod:`.deflate`: bounded inflation of deflated files; :mod:`.watch`: the per-file hook of scoring's watchdog.
* :mod:`.studies`: a folder tree scanned and grouped by study; :mod:`.header_reader`: header reads in a
  child process with a wall-time bound.

May import: :mod:`medfusion.ingest.records`, :mod:`medfusion.errors`, :mod:`medfusion.privacy`,
:mod:`medfusion.processes`. Nothing is imported here.
"""
