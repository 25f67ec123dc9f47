"""The synthetic demo cohort: patients, chest images, reports and labels with a known answer.

* :mod:`.cohort`: :func:`~medfusion.datasets.demo.cohort.generate_demo_cohort`, the whole cohort on disk.
* :mod:`.images`: rendered frontal/lateral chest images with the findings drawn in.
* :mod:`.reports`: generated report text consistent with the drawn findings.
* :mod:`.dicom_writer`: pixels + a spec -> a real DICOM file (any supported transfer syntax).

May import: :mod:`medfusion.ingest`, :mod:`medfusion.fhir`, :mod:`medfusion.config`,
:mod:`medfusion.salt`, :mod:`medfusion.errors`. Nothing is imported here.
"""
