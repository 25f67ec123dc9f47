"""Study-view rendering helpers: windowing, heatmap resize, highlighted report, tables."""

from __future__ import annotations

import numpy as np

from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.review.panels import contributions_table_html, probability_table_html
from medfusion.review.view import (
    DisplayImage,
    apply_window,
    highlighted_report_html,
    load_display_image,
    resize_map,
)


def test_window_maps_modality_units_back_and_narrows_contrast() -> None:
    image = DisplayImage(values=np.linspace(0, 1, 5, dtype=np.float32)[None, :], window=(40.0, 400.0), modality="CT")
    # stored window: display 0..1 <-> modality -160..240; the same window is the identity
    assert np.allclose(apply_window(image, 40.0, 400.0), image.values, atol=1e-6)
    narrow = apply_window(image, 40.0, 200.0)  # -60..140: -160 and -60 -> 0, 40 -> 0.5, 140 and 240 -> 1
    assert np.allclose(narrow, [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-6)


def test_resize_map_keeps_the_peak_location() -> None:
    small = np.zeros((8, 8), np.float32)
    small[2, 6] = 1.0
    big = resize_map(small, (64, 80))
    assert big.shape == (64, 80) and big.min() >= 0.0 and big.max() <= 1.0
    r, c = np.unravel_index(np.argmax(big), big.shape)
    assert abs(r / 64 - 2.5 / 8) < 0.1 and abs(c / 80 - 6.5 / 8) < 0.1


def test_report_highlights_only_top_tokens_and_escapes_html() -> None:
    text = "FINDINGS: <b>small</b> nodule right apex.\nIMPRESSION: nodule."
    spans = [(0, 0), (0, 8), (23, 29), (54, 60), (0, 0)]
    scores = np.array([0.0, 0.1, 1.0, 0.6, 0.0])
    out = highlighted_report_html(text, spans, scores, top_k=2)
    assert "&lt;b&gt;small&lt;/b&gt;" in out and "<br>" in out
    assert out.count("<mark") == 2
    assert ">nodule</mark>" in out and "FINDINGS</mark>" not in out
    assert "<mark" not in highlighted_report_html(text, spans, None)


def test_tables_show_calls_against_thresholds() -> None:
    html = probability_table_html(["nodule", "effusion"], [0.8, 0.1], [0.5, 0.3])
    assert html.count("POSITIVE") == 1 and html.count("negative") == 1
    assert "left:50.0%" in html and "width:80.0%" in html
    contrib = contributions_table_html(["nodule"], {"text": np.array([-1.0]), "image": np.array([2.0])})
    assert contrib.index(">image<") < contrib.index(">text<") and "+2.00" in contrib and "-1.00" in contrib


def test_display_image_is_the_full_resolution_frame_with_its_stored_window(tmp_path) -> None:
    ramp = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (60, 1))  # (60, 100), 0..3960
    spec = DicomSpec(
        study_uid="1.2.826.0.1.3680043.8.498.1",
        series_uid="1.2.826.0.1.3680043.8.498.2",
        modality="DX",
        window_center=2000.0,
        window_width=2000.0,
    )
    path = write_dicom(tmp_path / "a.dcm", ramp, spec)
    image = load_display_image([str(path)])
    assert image.values.shape == (60, 100) and image.modality == "DX"
    assert image.window == (2000.0, 2000.0)
    # values below 1000 / above 3000 are clipped by the stored window
    assert image.values[0, 10] == 0.0 and image.values[0, 90] == 1.0
    assert 0.45 < image.values[0, 50] < 0.55
    # re-windowing at the stored window reproduces the display values
    assert np.allclose(apply_window(image, 2000.0, 2000.0), image.values, atol=1e-5)
