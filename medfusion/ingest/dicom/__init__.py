"""DICOM in: files -> display-ready tensors with PHI-free metadata, bounded in bytes, pixels and time.

May import: :mod:`medfusion.ingest.records`, :mod:`medfusion.errors`, :mod:`medfusion.privacy`,
:mod:`medfusion.processes`. Nothing is imported here.
"""
