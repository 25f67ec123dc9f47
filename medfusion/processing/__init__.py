"""The preprocessing contract: one way from a study's files and report to the model's input batch.

::

    PreprocessingSpec ──> Preprocessor: StudyInput (DICOM paths + report) -> Sample -> Collator -> batch
    (stored in the model card)    (MONAI transforms, report sections, tokens, channel check)

Training, inference, both scoring engines, explanations and the review app all use these pieces, so a
study is turned into tensors in exactly one way:

* :mod:`.spec`: :class:`~medfusion.processing.spec.PreprocessingSpec`, the frozen settings (image size,
  frame policy, channels, pixel bound, token limit, report sections) saved with every model.
* :mod:`.sample`: :class:`~medfusion.processing.sample.StudyInput` (what comes in),
  :class:`~medfusion.processing.sample.Sample` (one study, model-ready) and
  :class:`~medfusion.processing.sample.Collator` (samples -> padded batch).
* :mod:`.transforms`: the MONAI dictionary transforms (:class:`~medfusion.processing.transforms.LoadDicomd`,
  :func:`~medfusion.processing.transforms.image_transforms`).
* :mod:`.preprocessor`: :class:`~medfusion.processing.preprocessor.Preprocessor`, the spec applied to a
  study (the only place the channel check and MONAI's error unwrapping live).

May import: :mod:`medfusion.errors`, :mod:`medfusion.config` (to read a spec off a run config) and the
readers of :mod:`medfusion.ingest` (DICOM, report sections). Must not import models, training, inference,
scoring, explain, review or tracking: they import this package. Nothing is imported here, so that
``import medfusion.processing.spec`` stays free of MONAI.
"""
