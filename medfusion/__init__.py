"""medfusion: multimodal (DICOM image + radiology report) diagnosis assistant."""

__version__ = "0.1.0"
