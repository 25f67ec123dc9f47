"""Two reviewers click "Next ›" rapidly at once in a real Chromium: the server stays up, every page renders.

Streamlit starts a new script thread for each rerun without waiting for the old one (``fastReruns``),
and every session shares the one cached model, so rapid navigation runs explanation passes
concurrently. They used to run backward passes on shared modules at once and crash the server
(segfault in ``libtorch_python.so``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.review.browser import CHROMIUM, Page, chromium_page, health, running_server
from tests.review.conftest import PASSWORD
from tests.review.test_browser import REQUIRED, _assert_no_error

#: Clicks per session and the pause between two clicks (seconds).
CLICKS = 22
INTERVAL_S = 0.4

_CLICK = """(() => {{
  const b = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === {label!r});
  if (!b) return 'missing';
  if (b.disabled) return 'disabled';
  b.click();
  return 'clicked';
}})()"""


def _open_first_study(page: Page, url: str) -> None:
    page.send("Page.navigate", url=url)
    page.wait_for("document.querySelector('input[type=password]')", 180)  # first run imports torch: slow on a busy host
    page.type_into("input[aria-label='User name']", "dr.alice")
    page.type_into("input[type=password]", PASSWORD)
    page.click_button("Sign in")
    page.wait_for("document.body.innerText.includes('Scored studies')", 120)
    page.wait_idle(120)
    page.click_button("Open study")
    page.wait_for("document.body.innerText.includes('Probabilities vs thresholds')", 180)
    page.wait_idle(180)


def _navigate(page: Page, start: threading.Barrier, clicked: list[str], errors: list[BaseException]) -> None:
    """Click Next every INTERVAL_S seconds (Previous once Next is disabled at the end of the queue)."""
    try:
        start.wait(60)
        label = "Next ›"
        for _ in range(CLICKS):
            outcome = page.eval(_CLICK.format(label=label))
            if outcome == "disabled":  # end of the queue: walk back
                label = "‹ Previous" if label == "Next ›" else "Next ›"
                outcome = page.eval(_CLICK.format(label=label))
            clicked.append(f"{label}:{outcome}")
            time.sleep(INTERVAL_S)
    except BaseException as err:  # noqa: BLE001 - reported by the test thread
        errors.append(err)


@pytest.mark.slow
def test_rapid_navigation_from_two_sessions_keeps_the_server_up(review_project, tmp_path) -> None:
    if not Path(CHROMIUM).exists():
        if REQUIRED:
            pytest.fail(f"MEDFUSION_REQUIRE_SYSTEM_TESTS=1 but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed (Debian package 'chromium')")
    settings = review_project.settings(tmp_path / "review.sqlite")
    log_path = tmp_path / "streamlit.log"
    (tmp_path / "profile_a").mkdir()
    (tmp_path / "profile_b").mkdir()
    with (
        running_server(settings, log_path) as (url, server),
        chromium_page(tmp_path / "profile_a") as page_a,
        chromium_page(tmp_path / "profile_b") as page_b,
    ):
        pages = [page_a, page_b]
        for page in pages:
            _open_first_study(page, url)
        queue = int(page_a.eval("document.body.innerText.match(/Study \\*?\\*?1 \\/ (\\d+)/)?.[1] ?? '0'") or 0)

        start = threading.Barrier(len(pages))
        clicked: list[list[str]] = [[] for _ in pages]
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_navigate, args=(p, start, c, errors)) for p, c in zip(pages, clicked, strict=True)
        ]
        began = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(CLICKS * (INTERVAL_S + 5) + 60)
        storm_s = time.monotonic() - began

        alive = server.poll() is None
        log = log_path.read_text(errors="replace")
        assert alive, f"the server died (exit {server.returncode}) during the clicks:\n{log[-4000:]}"
        assert not errors, errors
        for c in clicked:
            navigations = [x for x in c if x.endswith(":clicked")]
            assert len(navigations) == CLICKS, c
            assert sum(x.startswith("Next") for x in navigations) >= min(20, max(queue - 1, 0)), (queue, c)
        assert storm_s <= CLICKS * (INTERVAL_S + 1.0) + 5, f"clicks took {storm_s:.1f} s: not rapid"

        for name, page in zip("ab", pages, strict=True):
            page.wait_idle(240)
            page.wait_for("document.body.innerText.includes('Probabilities vs thresholds')", 240)
            page.wait_idle(240)
            page.screenshot(tmp_path / f"session_{name}.png")
            where = f"session {name} after {CLICKS} rapid clicks"
            _assert_no_error(page, where)
            text = page.text()[:1500]
            assert page.eval("document.querySelectorAll('.mfv-root img.mfv-img').length") == 1, (where, text)
            # token evidence, or the page says that no word moves the focused label (read from the image)
            marks = page.eval("document.querySelectorAll('mark').length")
            assert marks > 0 or "No word of this report moves" in page.text(), (where, text)
        assert server.poll() is None, f"the server died after the clicks:\n{log_path.read_text()[-4000:]}"
        assert health(url) == "ok"
    log = log_path.read_text(errors="replace")
    for marker in ("Segmentation fault", "Fatal Python error", "Traceback"):
        assert marker not in log, log[-4000:]
