"""A reviewer in a real Chromium, end to end: opens a study by its URL and signs in, changes the window
preset, scrolls to the lateral view, zooms and pans, measures a CTR, records the decision with the
keyboard shortcuts, and the audit row and the measurement are in the store.

Mouse input goes through the DevTools protocol (``Input.dispatchMouseEvent``: real wheel, press, move and
release events), so the component's own handlers run as they do for a user.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from medfusion.review.store import ReviewStore
from medfusion.scoring import read_results, study_inputs
from tests.review.browser import CHROMIUM, Page, chromium_page, running_app
from tests.review.conftest import PASSWORD
from tests.review.test_browser import REQUIRED, _assert_no_error
from tests.review.test_browser_study_link import _checked, _form_of


def _rect(page: Page, selector: str) -> dict:
    """Viewport rectangle of the first element matching ``selector`` (scrolled into view first)."""
    page.eval(f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})")
    time.sleep(0.3)
    return page.eval(
        f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
        " return {x: r.x, y: r.y, w: r.width, h: r.height}; })()"
    )


def _mouse(page: Page, kind: str, x: float, y: float, **extra: object) -> None:
    page.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)


def _click_at(page: Page, x: float, y: float) -> None:
    _mouse(page, "mouseMoved", x, y)
    _mouse(page, "mousePressed", x, y, button="left", clickCount=1)
    _mouse(page, "mouseReleased", x, y, button="left", clickCount=1)


def _drag(page: Page, start: tuple[float, float], end: tuple[float, float], steps: int = 8) -> None:
    _mouse(page, "mouseMoved", *start)
    _mouse(page, "mousePressed", *start, button="left", clickCount=1)
    for i in range(1, steps + 1):
        t = i / steps
        _mouse(page, "mouseMoved", start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]), buttons=1)
    _mouse(page, "mouseReleased", *end, button="left", clickCount=1)


def _choose(page: Page, label: str, option_prefix: str) -> None:
    """Pick the option starting with ``option_prefix`` in the selectbox labelled ``label`` (a combobox:
    click it, type to filter, click the option)."""
    box = f"input[role=combobox][aria-label={json.dumps(label)}]"
    assert page.eval(f"!!document.querySelector({json.dumps(box)})"), f"no selectbox {label!r}: {page.text()[:800]}"
    r = _rect(page, box)
    _click_at(page, r["x"] + r["w"] / 2, r["y"] + r["h"] / 2)
    page.wait_for("document.querySelectorAll('[role=option]').length > 0", 20)
    page.send("Input.insertText", text=option_prefix)  # filter: long lists are virtualised
    time.sleep(0.5)
    pick = (
        "[...document.querySelectorAll('[role=option]')]"
        f".find(o => o.innerText.trim().startsWith({json.dumps(option_prefix)}))"
    )
    page.wait_for(pick, 20)
    o = page.eval(
        f"(() => {{ const r = {pick}.getBoundingClientRect(); return {{x: r.x, y: r.y, w: r.width, h: r.height}}; }})()"
    )
    _click_at(page, o["x"] + o["w"] / 2, o["y"] + o["h"] / 2)
    page.wait_for(f"document.querySelector({json.dumps(box)}).value.startsWith({json.dumps(option_prefix)})", 20)


def _view(page: Page) -> dict:
    return json.loads(page.eval("document.querySelector('.mfv-root').dataset.view"))


def _src(page: Page) -> str:
    return page.eval("document.querySelector('.mfv-img').getAttribute('src').slice(-64)")


def _wait_new_image(page: Page, before: str) -> None:
    src = "(document.querySelector('.mfv-img')?.getAttribute('src') ?? '').slice(-64)"
    page.wait_for(f"{src} && {src} !== {json.dumps(before)}", 60)
    page.wait_idle()


@pytest.mark.slow
def test_link_login_preset_lateral_zoom_ctr_and_shortcut_decision_in_the_audit(review_project, tmp_path) -> None:
    if not Path(CHROMIUM).exists():
        if REQUIRED:
            pytest.fail(f"MEDFUSION_REQUIRE_SYSTEM_TESTS=1 but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed (Debian package 'chromium')")
    settings = review_project.settings(tmp_path / "review.sqlite")
    results = read_results(review_project.results_dir)
    study_uid = next(
        u for u in results["study_uid"] if len(study_inputs(review_project.results_dir, u).image_paths) == 2
    )
    (tmp_path / "profile").mkdir()
    with running_app(settings, tmp_path / "streamlit.log") as url, chromium_page(tmp_path / "profile") as page:
        page.send("Page.navigate", url=f"{url}study?study={study_uid}")  # a study with a lateral view
        page.wait_for("document.querySelector('input[type=password]')", 180)
        page.type_into("input[aria-label='User name']", "dr.alice")
        page.type_into("input[type=password]", PASSWORD)
        page.click_button("Sign in")
        page.wait_for("document.body.innerText.includes('This study: 2 series')", 240)
        page.wait_for("document.querySelector('.mfv-root img.mfv-img')", 240)
        page.wait_idle(240)
        _assert_no_error(page, "study with two views")

        # a window preset in modality units changes the rendered image and the sliders' values
        before = _src(page)
        _choose(page, "Window preset", "Auto")
        _wait_new_image(page, before)
        assert "stored value" in page.text()  # the sliders are labelled with the modality units
        page.screenshot(tmp_path / "viewer_preset.png")

        # the second series: the lateral view
        frontal = _src(page)
        _choose(page, "Series", "2:")
        _wait_new_image(page, frontal)
        assert " LL" in page.text(), page.text()[:1500]
        _assert_no_error(page, "lateral view")
        page.screenshot(tmp_path / "viewer_lateral.png")
        _choose(page, "Series", "1:")
        page.wait_for("!document.body.innerText.includes(' LL (1 image')", 60)
        page.wait_idle()

        _choose(page, "Heatmap", "None")  # the plain image to measure on
        page.wait_idle()

        # wheel zoom around the viewport's centre, then a drag pan
        vp = _rect(page, ".mfv-viewport")
        cx, cy = vp["x"] + vp["w"] / 2, vp["y"] + vp["h"] / 2
        fitted = _view(page)
        for _ in range(3):
            _mouse(page, "mouseWheel", cx, cy, deltaX=0, deltaY=-300)
            time.sleep(0.1)
        zoomed = _view(page)
        ratio = zoomed["k"] / fitted["k"]
        assert ratio == pytest.approx(3.857, rel=0.02), (fitted, zoomed)  # exp(0.0015 * 900): 3 wheel notches
        _drag(page, (cx, cy), (cx + 40, cy + 25))
        panned = _view(page)
        assert (panned["tx"] - zoomed["tx"], panned["ty"] - zoomed["ty"]) == pytest.approx((40, 25), abs=1.0)

        # two calipers drawn while zoomed and panned: widths in full-resolution image pixels
        k = panned["k"]
        cardiac_screen, thoracic_screen = 120.0, 300.0
        page.click_button("Cardiac width")
        _drag(page, (cx - cardiac_screen / 2, cy + 10), (cx + cardiac_screen / 2, cy + 14))
        page.wait_for("document.body.innerText.includes('draw the thoracic width')", 60)
        page.wait_idle()
        page.click_button("Thoracic width")
        _drag(page, (cx - thoracic_screen / 2, cy + 40), (cx + thoracic_screen / 2, cy + 40))
        page.wait_for("document.body.innerText.includes('saved with your next decisions')", 60)
        page.wait_idle()
        assert _view(page)["k"] == pytest.approx(k)  # the rerun kept the zoom
        expected = (cardiac_screen / k, thoracic_screen / k)
        shown = re.search(r"CTR (\d\.\d{3}) \(cardiac ([\d.]+) px / thoracic ([\d.]+) px\)", page.text())
        assert shown, page.text()[:2000]
        assert float(shown.group(2)) == pytest.approx(expected[0], abs=0.6)
        assert float(shown.group(3)) == pytest.approx(expected[1], abs=0.6)
        page.click_button("Fit")  # the whole image with both calipers, which stay on the anatomy they measure
        time.sleep(0.5)
        assert _view(page)["k"] == pytest.approx(fitted["k"])
        assert page.eval("document.querySelectorAll('.mfv-caliper').length") == 2, page.eval(
            "document.querySelector('.mfv-readout').textContent + ' | ' + document.querySelector('.mfv-svg').innerHTML"
        )
        page.screenshot(tmp_path / "viewer_ctr.png")

        # decide with the keyboard (a: agree on the focused label, s: save): the measurement goes with it
        assert page.url().endswith(f"/study?study={study_uid}"), page.url()
        page.eval("document.activeElement && document.activeElement.blur()")
        _form_of(page, study_uid)
        page.press("a")
        _checked(page, 1)
        page.press("s")
        page.wait_for("document.body.innerText.includes('Saved 1 decision')", 60)
        page.wait_idle()
        _assert_no_error(page, "after saving")

    store = ReviewStore(settings.store_path)
    measurements = store.measurements(study_uid)
    assert len(measurements) == 1, measurements
    m = measurements[0]
    assert m.reviewer == "dr.alice" and m.kind == "ctr"
    assert (m.cardiac_width, m.thoracic_width) == pytest.approx(expected, abs=0.6)
    assert m.ratio == pytest.approx(cardiac_screen / thoracic_screen, abs=0.01)
    decisions = store.audit(study_uid)
    assert len(decisions) == 1 and decisions[0].decision == "agree" and decisions[0].decided_at == m.decided_at
    log = (tmp_path / "streamlit.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    keep = os.environ.get("MEDFUSION_REVIEW_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in tmp_path.glob("viewer_*.png"):
            shutil.copy(png, keep)
