"""A reviewer in a real Chromium: opens a study by its URL, signs in (the link survives), decides with the
keyboard, goes next, and the audit rows are in the store; then the audit and admin pages, and the
sidebar's two exports downloaded (built when clicked)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from fhir.resources import get_fhir_model_class

from medfusion.results import labels_of
from medfusion.review.auth import add_user
from medfusion.review.export import fhir_ndjson, labels_frame
from medfusion.review.store import ReviewStore
from medfusion.review.worklist import WorklistQuery, build_worklist
from medfusion.scoring import read_results
from tests.review.browser import CHROMIUM, chromium_page, running_app
from tests.review.conftest import PASSWORD
from tests.review.test_browser import REQUIRED, _assert_no_error

STUDY_SHOWN = "document.body.innerText.includes('Probabilities vs thresholds')"


def _form_of(page, uid: str) -> None:
    """Wait for the study's own decision form (its container's class keeps the key's digits), idle."""
    digits = uid.replace(".", "")
    page.wait_for(
        "[...document.querySelectorAll('[class*=\"st-key-decide_\"]')]"
        f".some(e => e.className.replace(/[^0-9 ]/g, '').includes('{digits}'))",
        240,
    )
    page.wait_idle(240)


def _checked(page, n: int) -> None:
    """Wait until ``n`` decision radios are checked (a key press has gone through a rerun)."""
    page.wait_for(f"document.querySelectorAll('input[type=radio]:checked').length === {n}", 120)
    page.wait_idle(120)


def _downloaded(folder: Path, suffix: str, timeout: float = 120.0) -> str:
    """The text of the one file ending in ``suffix`` that Chromium has finished saving into ``folder``.

    Finished: no ``.crdownload`` left, and the file non-empty and the same size twice, 0.5 s apart
    (Chromium may reserve the final name with an empty file before it writes the download).
    """
    deadline, last = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if p.name.endswith(suffix)]
        writing = any(p.name.endswith(".crdownload") for p in folder.iterdir())
        if len(done) == 1 and not writing:
            size = done[0].stat().st_size
            if size > 0 and size == last:
                return done[0].read_text()
            last = size
        assert len(done) <= 1, done
        time.sleep(0.5)
    raise AssertionError(f"no {suffix} download in {timeout:.0f} s: {sorted(p.name for p in folder.iterdir())}")


def _nav(page, title: str) -> None:
    """Follow the sidebar's link to a page (same session: a reload would sign the user out)."""
    found = page.eval(
        "(() => { const a = [...document.querySelectorAll('[data-testid=\"stSidebarNav\"] a')]"
        f".find(a => a.innerText.trim().endsWith({title!r})); if (a) a.click(); return !!a; }})()"
    )
    assert found, f"no sidebar link {title!r}: {page.text()[:400]!r}"


@pytest.mark.slow
def test_study_link_login_shortcuts_next_and_audit_rows(review_project, tmp_path) -> None:
    if not Path(CHROMIUM).exists():
        if REQUIRED:
            pytest.fail(f"MEDFUSION_REQUIRE_SYSTEM_TESTS=1 but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed (Debian package 'chromium')")
    users = tmp_path / "users.yaml"
    add_user(users, "boss", PASSWORD, role="admin")
    settings = review_project.settings(tmp_path / "review.sqlite")
    settings = type(settings).create(
        settings.results_dir,
        store_path=settings.store_path,
        users_path=users,
        tracking_uri=settings.tracking_uri,
        login_delay_s=0.2,
        viewer_url_template="https://pacs.example/ohif/viewer?StudyInstanceUIDs={study_uid}",
    )
    results = read_results(review_project.results_dir)
    labels = labels_of(results)
    queue = list(
        build_worklist(
            results,
            ReviewStore(settings.store_path).reviewed_counts(labels),
            WorklistQuery(states=("unreviewed", "partial")),
        ).study_uid
    )
    uid, after = queue[1], queue[2]  # a study in the middle of the queue
    profile = tmp_path / "profile"
    profile.mkdir()
    with running_app(settings, tmp_path / "streamlit.log") as url, chromium_page(profile) as page:
        page.send("Page.navigate", url=f"{url}study?study={uid}")
        page.wait_for("document.querySelector('input[type=password]')", 180)
        assert "Sign in to open the linked study." in page.text()
        page.type_into("input[aria-label='User name']", "boss")
        page.type_into("input[type=password]", PASSWORD)
        began = time.monotonic()
        page.click_button("Sign in")
        page.wait_for(STUDY_SHOWN, 240)
        page.wait_idle(240)
        first_open_s = time.monotonic() - began
        assert page.url().endswith(f"/study?study={uid}"), page.url()
        assert "Study 2 /" in page.text() and uid in page.text()
        _assert_no_error(page, "study opened by link")
        page.screenshot(tmp_path / "study.png")

        page.eval("document.activeElement && document.activeElement.blur()")
        _form_of(page, uid)
        for n, key in enumerate(("a", "d"), 1):  # the focused label: agree, then (focus moved down) disagree
            page.press(key)
            _checked(page, n)
        assert "unsaved" in page.text()
        page.press("s")
        page.wait_for("document.body.innerText.includes('Saved 2 decision(s)')", 180)
        page.wait_idle(120)
        page.scroll_main(900)
        page.screenshot(tmp_path / "study_decisions.png")
        # typing a comment with the letter n does not move to the next study
        page.type_into("textarea", "no change")
        page.press("n")
        time.sleep(1.0)
        assert page.url().endswith(f"/study?study={uid}"), page.url()
        page.eval("document.activeElement && document.activeElement.blur()")
        page.wait_idle(120)
        page.press("n")
        page.wait_for(f"location.href.endsWith('study={after}')", 120)
        _form_of(page, after)
        assert "Study 3 /" in page.text()
        # a draft left behind on Previous is kept and announced
        page.eval("document.activeElement && document.activeElement.blur()")
        page.press("a")
        _checked(page, 1)
        page.press("p")
        page.wait_for(f"location.href.endsWith('study={uid}')", 120)
        page.wait_for("document.body.innerText.includes('unsaved decision(s)')", 120)
        assert f"Study {after} has 1 unsaved decision(s)" in page.text()
        _assert_no_error(page, "back on the first study")

        _nav(page, "Audit")
        page.wait_for("document.body.innerText.includes('Audit trail')", 120)
        page.wait_idle(120)
        assert "Entries\n\n2" in page.text()  # the table itself is a canvas
        page.screenshot(tmp_path / "audit.png")
        _nav(page, "Admin")
        page.wait_for("document.body.innerText.includes('Health')", 120)
        page.wait_idle(120)
        page.screenshot(tmp_path / "admin.png")
        _nav(page, "Worklist")
        page.wait_for("document.body.innerText.includes('Scored studies')", 120)
        page.wait_idle(120)
        # the table itself is a canvas (its PACS link column is checked in test_app_pages.py)
        page.screenshot(tmp_path / "worklist.png")
        # the sidebar's exports, built on click: the store's two decisions, as the export functions write them
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        page.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        page.click_button("FHIR R5 (NDJSON)")
        ndjson = _downloaded(downloads, ".ndjson")
        page.click_button("Labels (CSV)")
        csv = _downloaded(downloads, ".csv")
        _assert_no_error(page, "exports downloaded")

    store = ReviewStore(settings.store_path)
    assert ndjson == fhir_ndjson(store)
    resources = [json.loads(line) for line in ndjson.splitlines()]
    for resource in resources:  # valid R5, each
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    kinds = sorted(r["resourceType"] for r in resources)
    assert kinds == ["DiagnosticReport", "Observation", "Observation"]  # the study's report, its two labels
    assert csv == labels_frame(store, labels).to_csv(index=False)
    saved = {r.label: int(r.reviewed_value) for r in store.current(uid)}
    assert csv.splitlines()[1].startswith(f"{uid},{saved[labels[0]]},{saved[labels[1]]},")

    rows = ReviewStore(settings.store_path).audit()
    assert [(r.study_uid, r.label, r.decision, r.reviewer) for r in rows] == [
        (uid, labels[0], "agree", "boss"),
        (uid, labels[1], "disagree", "boss"),
    ]
    assert all(r.corrected_value is None for r in rows)
    log = (tmp_path / "streamlit.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    (tmp_path / "first_open_s.txt").write_text(f"{first_open_s:.1f}\n")
    keep = os.environ.get("MEDFUSION_REVIEW_SCREENSHOTS")
    if keep:  # MEDFUSION_REVIEW_SCREENSHOTS=/tmp/shots pytest tests/review/test_browser_study_link.py
        Path(keep).mkdir(parents=True, exist_ok=True)
        for produced in [*tmp_path.glob("*.png"), tmp_path / "first_open_s.txt"]:
            shutil.copy(produced, keep)
