"""The study view's image panel (Streamlit): series/instance/frame, window presets, the viewer, CTR, header.

Called by the review page's ``_image_panel``; everything it computes comes from the pure modules of
this package (:mod:`.pixels`, :mod:`.windowing`, :mod:`.study`, :mod:`.geometry`, :mod:`.header`).
Session state per study ``uid``: ``ser_``/``inst_``/``frame_`` (what is shown), ``preset_``,
``wl_``/``ww_`` (window in modality units), ``inv_`` (invert), ``ctr_`` (the pending
:class:`~medfusion.review.store.Measurement`) and ``ctrc_`` (its calipers, to draw them again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st

from medfusion.errors import InputRejected
from medfusion.review.store import Measurement
from medfusion.review.view import DisplayImage, resize_map
from medfusion.review.viewer.component import Calipers, read_calipers, show
from medfusion.review.viewer.geometry import cardiothoracic_ratio
from medfusion.review.viewer.header import header_rows, read_header
from medfusion.review.viewer.pixels import ModalityImage, load_instance
from medfusion.review.viewer.study import Instance, StudyImages, list_study
from medfusion.review.viewer.windowing import Window, png_bytes, presets, render, value_range

if TYPE_CHECKING:
    from medfusion.explain.explanation import StudyExplanation
    from medfusion.review.auth import User


@st.cache_data(max_entries=16, show_spinner=False)
def _study(paths: tuple[str, ...]) -> StudyImages:
    return list_study(paths)


@st.cache_resource(max_entries=6, show_spinner="Reading the image...")
def _instance(path: str) -> tuple[ModalityImage, list[Window]]:
    image = load_instance(path)
    return image, presets(image)


@st.cache_data(max_entries=24, show_spinner=False)
def _grey(path: str, frame: int, window: Window, invert: bool) -> np.ndarray:
    image, _ = _instance(path)
    return render(image.frame(frame), window, inverted=image.inverted, invert=invert, image=image)


def pending_measurement(uid: str) -> Measurement | None:
    """The CTR measured on study ``uid`` and not saved yet (saved with the next decisions), or None."""
    found = st.session_state.get(f"ctr_{uid}")
    return found if isinstance(found, Measurement) else None


def _set_window(uid: str, windows: Mapping[str, Window]) -> None:
    chosen = windows.get(st.session_state.get(f"preset_{uid}", ""))
    if chosen is not None:
        st.session_state[f"wl_{uid}"] = float(chosen.center)
        st.session_state[f"ww_{uid}"] = float(chosen.width)


def _choose_instance(study: StudyImages, uid: str, model_sop: str | None) -> tuple[Instance, int]:
    """Series selector, instance and frame sliders; returns the instance and frame to show."""
    start = study.find(model_sop) or (0, 0)
    n_images = sum(len(s.instances) for s in study.series)
    st.caption(f"This study: {len(study.series)} series, {n_images} image(s)")
    c1, c2, c3 = st.columns([1.4, 1, 1])
    s = c1.selectbox(
        "Series",
        range(len(study.series)),
        index=start[0],
        key=f"ser_{uid}",
        format_func=lambda i: f"{i + 1}: {study.series[i].label}",
    )
    series = study.series[s if s is not None else 0]
    i = 0
    if len(series.instances) > 1:
        i = (
            c2.slider("Instance", 1, len(series.instances), start[1] + 1 if s == start[0] else 1, key=f"inst_{uid}_{s}")
            - 1
        )
    else:
        c2.caption(f"Instance {series.instances[0].label}")
    instance = series.instances[i]
    frame = 0
    if instance.frames > 1:
        frame = (
            c3.slider("Frame", 1, instance.frames, instance.frames // 2 + 1, key=f"frame_{uid}_{instance.sop_uid}") - 1
        )
    return instance, frame


def _window_controls(uid: str, sop_uid: str, image: ModalityImage, windows: list[Window]) -> tuple[Window, bool]:
    by_name = {w.name: w for w in windows}
    names = list(by_name)
    if st.session_state.get(f"preset_{uid}") not in by_name:
        st.session_state[f"preset_{uid}"] = names[0]
        _set_window(uid, by_name)
    elif st.session_state.get(f"wsop_{uid}") != sop_uid:  # another image: its own values for the preset
        _set_window(uid, by_name)
    st.session_state[f"wsop_{uid}"] = sop_uid
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
    c1.selectbox("Window preset", names, key=f"preset_{uid}", on_change=_set_window, args=(uid, by_name))
    invert = c2.checkbox("Invert", key=f"inv_{uid}")
    lo, hi = value_range(image)
    span = max(hi - lo, 1.0)
    level = float(st.session_state.get(f"wl_{uid}", (lo + hi) / 2))
    width = float(st.session_state.get(f"ww_{uid}", span))
    level_range = (min(lo - span / 2, level), max(hi + span / 2, level))
    width_range = (1.0, max(2.0 * span, width, 4000.0 if image.units == "HU" else 1.0))
    st.session_state[f"wl_{uid}"], st.session_state[f"ww_{uid}"] = level, width
    w1, w2 = st.columns(2)
    w1.slider(f"Window level ({image.units})", *level_range, key=f"wl_{uid}", format="%.5g")
    w2.slider(f"Window width ({image.units})", *width_range, key=f"ww_{uid}", format="%.5g")
    base = by_name[st.session_state[f"preset_{uid}"]]
    level, width = float(st.session_state[f"wl_{uid}"]), float(st.session_state[f"ww_{uid}"])
    if base.voi_lut and (level, width) == (base.center, base.width):
        return base, invert
    function = base.function if (level, width) == (base.center, base.width) else "LINEAR"
    return Window("custom", level, max(width, 1.0), function), invert


def _measurement(uid: str, user: User | None, instance: Instance, key: str, calipers: Calipers | None) -> None:
    """Update the pending CTR from the calipers and show it (with the last saved one)."""
    if calipers is not None and calipers != st.session_state.get(f"ctrc_{uid}"):  # newly drawn
        st.session_state[f"ctrc_{uid}"] = calipers
        st.session_state.pop(f"ctr_{uid}", None)
        if calipers.cardiac and calipers.thoracic:
            reviewer = user.name if user is not None else ""
            if calipers.cardiac.width > calipers.thoracic.width:
                st.warning("The cardiac width exceeds the thoracic width: draw them again.")
            elif reviewer:
                st.session_state[f"ctr_{uid}"] = Measurement(
                    uid, instance.sop_uid, round(calipers.cardiac.width, 2), round(calipers.thoracic.width, 2), reviewer
                )
    pending = pending_measurement(uid)
    drawn = st.session_state.get(f"ctrc_{uid}")
    c1, c2 = st.columns([3, 1], vertical_alignment="center")
    if pending is not None:
        c1.markdown(
            f"**CTR {pending.ratio:.3f}** (cardiac {pending.cardiac_width:.1f} px / thoracic "
            f"{pending.thoracic_width:.1f} px) · saved with your next decisions"
        )
    elif isinstance(drawn, Calipers) and drawn.key == key:
        missing = [n for n in ("cardiac", "thoracic") if getattr(drawn, n) is None]
        c1.caption(f"CTR: draw the {' and '.join(missing)} width" if missing else "CTR: not recordable")
    else:
        c1.caption("CTR: choose *Cardiac width* then *Thoracic width* and drag across the image.")
    if (pending is not None or drawn is not None) and c2.button("Clear CTR", key=f"ctrx_{uid}"):
        st.session_state.pop(f"ctr_{uid}", None)
        st.session_state.pop(f"ctrc_{uid}", None)
        st.session_state[f"ctrn_{uid}"] = st.session_state.get(f"ctrn_{uid}", 0) + 1  # a fresh viewer: no calipers
        st.rerun()


def _header_panel(path: str, user: User | None) -> None:
    allowed = bool(user is not None and user.may_see_identifiers)
    with st.expander("DICOM header" + ("" if allowed else " (identifiers masked)")):
        try:
            rows = header_rows(read_header(path), may_see_identifiers=allowed)
        except InputRejected as err:
            st.error(f"Cannot read the header: {err.reason}")
            return
        st.dataframe(
            [{"tag": r.tag, "name": r.name, "VR": r.vr, "value": r.value} for r in rows],
            hide_index=True,
            width="stretch",
            height=300,
        )


def image_panel(
    ex: StudyExplanation,
    image: DisplayImage | None,
    labels: list[str],
    uid: str,
    *,
    paths: Sequence[str],
    heatmap_names: Mapping[str, str],
    focus: int,
    user: User | None,
    more: Callable[[tuple[str, ...], str], StudyExplanation] | None = None,
    failed: Mapping[str, str] | None = None,
) -> tuple[list[str], float | None]:
    """Draw the image panel; returns (heatmap methods shown, opacity or None) for the audit row.

    Args:
        ex: The study's explanation (heatmaps of the instance the model read).
        image: The model's image (its SOP UID and frame say where the heatmaps belong), or None.
        labels: Label names.
        uid: StudyInstanceUID.
        paths: The study's files (every series and instance).
        heatmap_names: Method -> display name.
        focus: Index of the label to show first.
        user: The logged-in user (reviewer of the CTR; may they see identifiers).
        more: ``more(methods, label)`` computes (or takes from the cache) the selected map only; None
            when ``ex`` already holds every map.
        failed: Method -> why it failed its recorded sanity check; such methods are offered last and
            labelled.
    """
    failed = failed or {}
    methods = sorted((m for m in heatmap_names if m in ex.available), key=lambda m: m in failed)
    c1, c2, c3 = st.columns([1.2, 1, 1])
    method = c1.selectbox(
        "Heatmap",
        ["none", *methods],
        index=1 if methods else 0,
        key=f"hm_{uid}",
        format_func=lambda m: heatmap_names.get(m, "None") + (" (failed sanity check)" if m in failed else ""),
    )
    hm_label = c2.selectbox("For label", labels, index=focus, key=f"hml_{uid}")
    opacity = c3.slider("Opacity", 0.0, 1.0, 0.4, 0.05, key=f"op_{uid}", disabled=method == "none")
    study = _study(tuple(str(p) for p in paths))
    if not study.series:
        st.info("This study has no readable image.")
        return [], None
    instance, frame = _choose_instance(study, uid, image.sop_uid if image is not None else None)
    try:
        modality_image, windows = _instance(instance.path)
    except InputRejected as err:
        st.error(f"Cannot show this image: {err.reason}")
        return [], None
    window, invert = _window_controls(uid, instance.sop_uid, modality_image, windows)
    grey = _grey(instance.path, frame, window, invert)
    key = f"{instance.sop_uid}:{frame}"
    on_model_image = image is not None and image.sop_uid == instance.sop_uid and image.frame in (None, frame)
    shown: tuple[list[str], float | None] = ([], None)
    units = modality_image.units
    caption = f"{modality_image.modality or ''} {instance.label} · W {window.width:.5g} L {window.center:.5g} {units}"
    if method != "none" and on_model_image:
        from medfusion.explain import overlay_rgb

        if method in failed:
            warning = f"{heatmap_names[method]} {failed[method]}: it may not show what the model learnt."
            st.caption(f":material/warning: {warning}")
        if more is not None:
            ex = more((method,), hm_label)
        heat = resize_map(ex.heatmaps[method][labels.index(hm_label)], grey.shape)
        png = png_bytes(overlay_rgb(grey.astype(np.float32) / 255.0, heat, opacity))
        caption = f"{heatmap_names[method]} for {hm_label} · {caption}"
        shown = ([method], opacity)
    else:
        png = png_bytes(grey)
        if method != "none":
            caption += " · heatmap only on the image the model read"
    drawn = st.session_state.get(f"ctrc_{uid}")
    state = show(
        png,
        grey.shape[:2],
        key,
        drawn if isinstance(drawn, Calipers) and drawn.key == key else None,
        widget_key=f"viewer_{uid}_{st.session_state.get(f'ctrn_{uid}', 0)}",
    )
    st.caption(caption + " · wheel: zoom, drag: pan, double-click: fit")
    _measurement(uid, user, instance, key, read_calipers(state, key, grey.shape[:2]))
    if study.unreadable:
        st.caption(f"{len(study.unreadable)} file(s) of this study could not be read.")
    _header_panel(instance.path, user)
    return shown


def last_ctr_text(measurements: Sequence[Any]) -> str | None:
    """``Last saved CTR: 0.512 (dr.alice, <time>)`` for the newest stored measurement, or None."""
    if not measurements:
        return None
    last = measurements[-1]
    return f"Last saved CTR: {last.ratio:.3f} ({last.reviewer}, {getattr(last, 'decided_at', '')})"


__all__ = ["cardiothoracic_ratio", "image_panel", "last_ctr_text", "pending_measurement"]
