"""Encoders (MONAI image, Hugging Face text), fusion strategies, the assembled model, and its folder.

* :mod:`.registry`: the single source of component names (``image_encoder.name``, ``fusion.name``).
* :mod:`.image_encoders`, :mod:`.text_encoder`, :mod:`.tokenizer`, :mod:`.fusion`: the parts.
* :mod:`.model`: :class:`~medfusion.models.model.MedFusionModel`; :func:`~medfusion.models.model.build_model`
  (architecture from a card), :func:`~medfusion.models.model.load_pretrained` (encoder weights, a separate
  step), and the model folder (:func:`~medfusion.models.model.save_model_dir`,
  :func:`~medfusion.models.model.load_model_dir`).
* :mod:`.card`: :class:`~medfusion.models.card.ModelCard`, the one reader/writer of ``medfusion_model.json``.
* :mod:`.calibration`: per-label Platt scaling of the logits; :mod:`.weights`: pickle-free weight files.

May import: :mod:`medfusion.config` (component settings), :mod:`medfusion.processing.spec` (the card holds
the preprocessing spec), :mod:`medfusion.errors`. Must not import training, inference, scoring, explain,
review or tracking. Import from the submodules; nothing is imported here so that ``import medfusion.models``
stays cheap.
"""
