"""The study viewer of the review app: modality-unit pixels, window presets, series/instance/frame
navigation, zoom/pan at full resolution, calipers for the cardiothoracic ratio, the masked DICOM header.

Pure modules (no Streamlit): :mod:`.pixels` (an instance in modality units), :mod:`.windowing`
(presets, 8-bit rendering), :mod:`.study` (series and instances of a study), :mod:`.geometry`
(zoom/pan coordinates, calipers, CTR), :mod:`.header` (masked header rows). Streamlit:
:mod:`.component` (the browser viewer) and :mod:`.panel` (the study page's image panel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medfusion.review.store import Measurement


def pending_measurement(uid: str) -> Measurement | None:
    """The cardiothoracic ratio measured on study ``uid`` in this session and not saved yet, or None.

    It is kept in ``st.session_state[f"ctr_{uid}"]`` (a :class:`~medfusion.review.store.Measurement`)
    and saved with the study's next decisions (``ReviewStore.record_many(decisions, measurements)``).
    """
    from medfusion.review.viewer.panel import pending_measurement as pending

    return pending(uid)


__all__ = ["pending_measurement"]
