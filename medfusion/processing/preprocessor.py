"""A :class:`PreprocessingSpec` applied to one study: :class:`Preprocessor` (``StudyInput -> Sample``).

Images go through the MONAI chain of :func:`~medfusion.processing.transforms.image_transforms` (paths ->
``(C, *image_size)``); the report through section selection (casing untouched) and the tokenizer
(truncated to ``max_tokens``, not padded: the :class:`~medfusion.processing.sample.Collator` pads).

Errors: an unreadable image raises :class:`~medfusion.errors.InputRejected` (MONAI's ``Compose`` wraps
transform errors in ``RuntimeError``; the typed error behind it is unwrapped here, once), and so does an
image whose channel count is not the spec's ``in_channels``. Any other exception is a bug and propagates.

Training caches the deterministic part of the chain per study: :meth:`Preprocessor.decode` runs every
transform before the first random one (all of them when none is random, e.g. at inference), and
:meth:`Preprocessor.finish` runs the rest; ``finish(decode(paths))`` is :meth:`Preprocessor.image`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.transforms import Compose

from medfusion.errors import InputRejected
from medfusion.ingest.records import Report
from medfusion.ingest.reports.sections import select_sections
from medfusion.processing.sample import Sample, StudyInput
from medfusion.processing.spec import PreprocessingSpec
from medfusion.processing.transforms import image_transforms, input_error


def input_rejection(exc: BaseException) -> InputRejected:
    """The :class:`InputRejected` behind ``exc`` (MONAI's ``Compose`` re-raises transform errors as
    ``RuntimeError``); re-raises ``exc`` itself when there is none (a bug, not a bad input)."""
    found = input_error(exc)
    if found is None:
        raise exc
    return found


def report_text(report: str, sections: Sequence[str]) -> str:
    """The part of a report the model reads (``sections``, ``["full"]`` for all of it); casing untouched."""
    if not report or not report.strip():
        return ""
    return select_sections(Report(text=report), list(sections)).strip()


def as_image_tensor(x: Any) -> torch.Tensor:
    """A plain float32 tensor (MONAI MetaTensor metadata dropped)."""
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return torch.as_tensor(x, dtype=torch.float32).contiguous()


@dataclass(frozen=True)
class Decoded:
    """A study's image after the deterministic transforms (see :meth:`Preprocessor.decode`).

    Attributes:
        data: The transform chain's dict (key ``image``).
        source: The study's first image path (named in errors).
        final: Every transform has run and the channel count was checked.
    """

    data: dict[str, Any]
    source: str
    final: bool


class Preprocessor:
    """Study (DICOM paths + report) -> :class:`~medfusion.processing.sample.Sample`.

    Args:
        spec: The model's preprocessing spec.
        tokenizer: The model's Hugging Face tokenizer.
        n_labels: Number of labels (a study without labels gets an all-NaN ``(L,)`` label).
        uses_image: Whether the model reads images (``text_only`` models never decode them).
        train: Add the training augmentation (random) to the image chain.
        seed: Seed of the random transforms (see :meth:`set_random_state`).
    """

    def __init__(
        self,
        spec: PreprocessingSpec,
        tokenizer: Any,
        n_labels: int,
        *,
        uses_image: bool = True,
        train: bool = False,
        seed: int | None = None,
    ) -> None:
        self.spec = spec
        self.tokenizer = tokenizer
        self.n_labels = n_labels
        self.uses_image = uses_image
        self.train = train
        self.transform: Compose | None = None
        #: Index of the first random (or unknown) transform; None when nothing is random.
        self._split: int | None = None
        if uses_image:
            from monai.transforms import RandomizableTrait, Transform

            self.transform = image_transforms(
                spec.image_size,  # type: ignore[arg-type]
                frame_policy=spec.frame_policy,
                spatial_dims=spec.spatial_dims,
                train=train,
                max_pixels=spec.max_pixels,
                series_rules=spec.series_rules,
                intensity=spec.intensity,
            )
            self._split = self.transform.get_index_of_first(
                lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform)
            )
            if seed is not None:
                self.set_random_state(seed)

    def set_random_state(self, seed: int) -> None:
        """Seed the random image transforms (a DataLoader worker calls this with its own seed)."""
        if self.transform is not None:
            self.transform.set_random_state(seed)

    @property
    def cacheable(self) -> bool:
        """Whether :meth:`decode` does any work worth keeping (the chain does not start with a random step)."""
        return self.transform is not None and self._split != 0

    # ------------------------------------------------------------------------------------------ text

    def report(self, text: str) -> str:
        """The spec's sections of a report (``""`` when there is no text)."""
        return report_text(text or "", self.spec.report_sections)

    def tokens(self, report: str) -> torch.Tensor:
        """(T,) int64 token ids of ``report``, special tokens included, truncated to ``max_tokens``."""
        ids = self.tokenizer(report, truncation=True, max_length=self.spec.max_tokens)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    # ----------------------------------------------------------------------------------------- image

    def _run(self, data: dict[str, Any], *, start: int = 0, end: int | None = None) -> dict[str, Any]:
        """Transforms ``start`` to ``end`` (exclusive; None: to the last) of the image chain."""
        assert self.transform is not None
        try:
            return self.transform(data, start=start, end=end)
        except RuntimeError as err:  # MONAI's wrapper around the reader's typed error
            raise input_rejection(err) from None

    def _check_channels(self, data: dict[str, Any], source: str) -> None:
        channels = int(data["image"].shape[0])
        if channels != self.spec.in_channels:
            raise InputRejected(source, f"image has {channels} channels, the model expects {self.spec.in_channels}")

    def decode(self, paths: Sequence[str]) -> Decoded:
        """Run the deterministic head of the image chain (all of it when nothing is random).

        Args:
            paths: The study's DICOM files (non-empty).

        Raises:
            InputRejected: The image cannot be read, or (when the head is the whole chain) has the
                wrong number of channels.
        """
        if self.transform is None:
            raise RuntimeError("this preprocessor's model reads no images")
        files = [str(p) for p in paths]
        data: dict[str, Any] = {"image": files}
        final = self._split is None
        if self._split != 0:
            data = self._run(data, end=self._split)
        if final:
            self._check_channels(data, files[0])
        return Decoded(data, files[0], final)

    def finish(self, decoded: Decoded) -> torch.Tensor:
        """The rest of the chain after :meth:`decode`: ``(C, *image_size)`` float32.

        ``decoded`` is not modified (a cached head can be finished again, with new random draws).

        Raises:
            InputRejected: As :meth:`decode`.
        """
        data = decoded.data
        if not decoded.final:
            data = self._run(copy.deepcopy(data), start=self._split or 0)
            self._check_channels(data, decoded.source)
        return as_image_tensor(data["image"])

    def image(self, paths: Sequence[str]) -> torch.Tensor:
        """A study's image, preprocessed: ``(C, *image_size)`` float32.

        Raises:
            InputRejected: The image cannot be read or has the wrong number of channels.
        """
        return self.finish(self.decode(paths))

    # ---------------------------------------------------------------------------------------- sample

    def __call__(
        self, study: StudyInput, *, label: torch.Tensor | None = None, decoded: Decoded | None = None
    ) -> Sample:
        """Preprocess one study.

        Args:
            study: Image paths (may be empty) and report text (may be empty).
            label: (L,) float32 targets, NaN = unknown; None for all NaN.
            decoded: The study's cached :meth:`decode` output, if the caller kept one.

        Raises:
            InputRejected: The image cannot be read or has the wrong number of channels.
        """
        image = None
        if decoded is not None:
            image = self.finish(decoded)
        elif study.image_paths and self.uses_image:  # text_only models never read images
            image = self.image(study.image_paths)
        report = self.report(study.report_text)
        return Sample(
            image=image,
            input_ids=self.tokens(report),
            report=report,
            label=label if label is not None else torch.full((self.n_labels,), float("nan")),
            study_uid=study.study_uid,
        )
