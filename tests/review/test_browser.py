"""The real app under ``streamlit run`` on loopback, in a headless Debian Chromium: screenshots, no errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.review.browser import CHROMIUM, chromium_page, running_app
from tests.review.conftest import PASSWORD

REQUIRED = os.environ.get("MEDFUSION_REQUIRE_SYSTEM_TESTS") == "1"
ERROR_MARKERS = ("Traceback", "Error:", "Exception:", "KeyError", "Cannot show this study")


def _assert_no_error(page, where: str) -> None:
    text = page.text()
    found = [m for m in ERROR_MARKERS if m in text]
    exceptions = page.eval("document.querySelectorAll('[data-testid=\"stException\"]').length")
    assert not found and exceptions == 0, (
        f"{where}: Streamlit error on the page ({found}, {exceptions} exception block(s)):\n{text[:2000]}"
    )


@pytest.mark.slow
def test_app_in_chromium_logs_in_opens_a_study_and_shows_no_error(review_project, tmp_path) -> None:
    if not Path(CHROMIUM).exists():
        if REQUIRED:
            pytest.fail(f"MEDFUSION_REQUIRE_SYSTEM_TESTS=1 but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(
            f"{CHROMIUM} not installed (Debian package 'chromium'); "
            "set MEDFUSION_REQUIRE_SYSTEM_TESTS=1 to fail instead"
        )
    settings = review_project.settings(tmp_path / "review.sqlite")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with running_app(settings, tmp_path / "streamlit.log") as url, chromium_page(profile) as page:
        page.send("Page.navigate", url=url)
        page.wait_for("document.querySelector('input[type=password]')")
        _assert_no_error(page, "login page")
        page.screenshot(tmp_path / "login.png")

        page.type_into("input[aria-label='User name']", "dr.alice")
        page.type_into("input[type=password]", PASSWORD)
        page.click_button("Sign in")
        page.wait_for("document.body.innerText.includes('Scored studies')")
        page.wait_idle()
        _assert_no_error(page, "worklist")
        page.screenshot(tmp_path / "worklist.png")

        page.click_button("Open study")
        page.wait_for("document.body.innerText.includes('Probabilities vs thresholds')", 120)
        page.wait_idle()
        _assert_no_error(page, "study view")
        assert page.eval("document.querySelectorAll('.mfv-root img.mfv-img').length") == 1
        assert page.eval("document.querySelectorAll('mark').length") > 0  # highlighted report tokens
        shot = page.screenshot(tmp_path / "study.png")
        page.scroll_main(850)
        page.screenshot(tmp_path / "study_decisions.png")
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (tmp_path / "streamlit.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    keep = os.environ.get("MEDFUSION_REVIEW_SCREENSHOTS")
    if keep:  # e.g. to look at them: MEDFUSION_REVIEW_SCREENSHOTS=/tmp/shots pytest tests/review -k chromium
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in tmp_path.glob("*.png"):
            shutil.copy(png, keep)
