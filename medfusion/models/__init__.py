"""Encoders (MONAI image, Hugging Face text), fusion strategies, the assembled model and its folder format.

Import from the submodules (``medfusion.models.model``, ``.fusion``...); nothing is imported here so
that ``import medfusion.models`` stays cheap.
"""
