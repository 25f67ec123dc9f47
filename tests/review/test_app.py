"""The app driven by Streamlit's AppTest: login -> worklist -> study -> decision -> audit row."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
import torch
from streamlit.testing.v1 import AppTest

from medfusion.review.launch import APP_PATH
from medfusion.review.store import ReviewStore
from medfusion.scoring import read_results
from tests.dicom_sr.validators import dciodvfy_errors
from tests.review.conftest import PASSWORD
from tests.scoring.orthanc_server import running_orthanc
from tests.scoring.test_sr_stow import instance_count, stored_srs

APP = APP_PATH  # the packaged page (apps/review/app.py is a shim that runs it)
SHIM = Path(__file__).resolve().parents[2] / "apps" / "review" / "app.py"


@pytest.fixture
def app_env(review_project, tmp_path, monkeypatch):
    settings = review_project.settings(tmp_path / "review.sqlite")
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    torch.set_num_threads(1)
    return settings


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _login(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="login_name").input(name)
    at.text_input(key="login_password").input(password)
    return _button(at, "Sign in").click().run()


@pytest.mark.parametrize("script", [APP, SHIM], ids=["packaged", "shim"])
def test_wrong_password_is_refused(app_env, script: Path) -> None:
    at = AppTest.from_file(str(script), default_timeout=60).run()
    assert at.text_input(key="login_password") is not None and not at.exception
    at = _login(at, "dr.alice", "not-the-password")
    assert [e.value for e in at.error] == ["Unknown user name or wrong password."]
    assert "user" not in at.session_state and not at.dataframe


def test_reviewer_goes_from_worklist_to_an_audited_decision(app_env, review_project) -> None:
    results = read_results(review_project.results_dir)
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at = _login(at, "dr.alice", PASSWORD)
    assert not at.exception, at.exception
    assert at.title[0].value == "Worklist"
    table = at.dataframe[0].value
    assert len(table) == len(results) > 10  # every scored test study is on the worklist, unreviewed
    # priority order: the most suspicious study first
    first = table["study_uid"].iloc[0]
    at.selectbox(key="open_uid").select(first)
    at = at.button(key="open_study").click().run()
    assert not at.exception, at.exception
    assert at.session_state["study"] == first
    captions = [c.value for c in at.caption]
    assert any("wheel: zoom" in c for c in captions), "the study view shows the viewer"
    row = results.set_index("study_uid").loc[first]
    # window/level and opacity as the reviewer sets them end up on screen and in the audit row
    narrower = at.slider(key=f"ww_{first}").value / 2
    at.slider(key=f"op_{first}").set_value(0.7)
    at = at.slider(key=f"ww_{first}").set_value(narrower).run()
    assert any(f"W {narrower:.5g}" in c.value for c in at.caption)
    label = "nodule"
    decision = "agree"
    at.radio(key=f"d_{first}_{label}").set_value(decision)
    at.radio(key=f"d_{first}_effusion").set_value("disagree")  # a yes/no label: disagree is the other value
    at.text_area(key=f"c_{first}").input("checked against prior")
    at = _button(at, "Save decisions").click().run()
    assert not at.exception, at.exception
    assert any("Saved 2 decision(s)" in s.value for s in at.success)

    rows = {r.label: r for r in ReviewStore(app_env.store_path).audit(first)}
    assert set(rows) == {"nodule", "effusion"}
    nodule = rows["nodule"]
    assert (nodule.reviewer, nodule.decision, nodule.comment) == ("dr.alice", "agree", "checked against prior")
    assert (nodule.model_name, nodule.model_version) == (str(row["model_name"]), str(row["model_version"]))
    assert nodule.shown.probability == pytest.approx(float(row["prob_nodule"]))
    assert nodule.shown.threshold == pytest.approx(float(row["threshold_nodule"]))
    assert nodule.shown.methods == ("saliency", "occlusion")  # the defaults on screen
    assert nodule.shown.heatmap_opacity == pytest.approx(0.7)
    effusion = rows["effusion"]
    assert (effusion.decision, effusion.corrected_value) == ("disagree", None)
    assert effusion.reviewed_value is (not bool(row["decision_effusion"]))

    # the saved decisions become a VERIFIED DICOM SR superseding the model's (written by score --sr)
    at = at.button(key=f"vsr_{first}").click().run()
    assert not at.exception, at.exception
    (written,) = (review_project.results_dir / "sr_verified" / first).glob("*.dcm")
    assert any(f"Verified SR written: sr_verified/{first}/{written.name}" in s.value for s in at.success)
    assert dciodvfy_errors(written) == []
    sr = hd.sr.srread(written)
    assert (sr.VerificationFlag, sr.PreliminaryFlag) == ("VERIFIED", "FINAL")
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Alice^Reviewer"  # her display name
    groups = sr.content.get_image_measurement_groups()
    values = {str(g.tracking_identifier): g.get_qualitative_evaluations()[0].value.value for g in groups}
    present, absent = "52101004", "272519000"
    assert values == {
        "nodule": present if row["decision_nodule"] else absent,
        "effusion": absent if row["decision_effusion"] else present,
    }
    (model_sr,) = (review_project.results_dir / "sr").glob(f"part-*/{first}.dcm")
    predecessor = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == pydicom.dcmread(model_sr).SOPInstanceUID

    at = at.button(key="back").click().run()
    table = at.dataframe[0].value.set_index("study_uid")
    assert (table.loc[first, "reviewed"], table.loc[first, "state"]) == ("2/5", "partial")


def test_viewer_cannot_decide(app_env, review_project) -> None:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at = _login(at, "viewer.bob", PASSWORD)
    uid = at.dataframe[0].value["study_uid"].iloc[0]
    at = at.button(key="open_study").click().run()
    assert not at.exception, at.exception
    assert at.radio(key=f"d_{uid}_nodule").disabled
    assert not at.get("download_button")


def test_a_comment_with_identifiers_is_held_back_with_a_warning(app_env, review_project) -> None:
    import pydicom

    from medfusion.review.data import study_input

    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at = _login(at, "dr.alice", PASSWORD)
    uid = at.dataframe[0].value["study_uid"].iloc[0]
    at = at.button(key="open_study").click().run()
    assert not at.exception, at.exception
    header = pydicom.dcmread(study_input(review_project.results_dir, uid).image_paths[0], stop_before_pixels=True)
    family, given = str(header.PatientName).split("^")[:2]
    store = ReviewStore(app_env.store_path)

    def save(comment: str, **confirm: bool) -> AppTest:
        at.radio(key=f"d_{uid}_nodule").set_value("agree")
        at.text_area(key=f"c_{uid}").input(comment)
        if confirm:
            at.checkbox(key=f"cok_{uid}").check()
        return _button(at, "Save decisions").click().run()

    # the patient's own name from the header and an MRN: warned, nothing saved, the name not echoed
    at = save(f"Patient {given.title()} {family.title()} MRN 12345")
    assert not at.exception, at.exception
    warnings = [w.value for w in at.warning]
    assert any("a patient name" in w and "an ID number" in w for w in warnings), warnings
    assert not any(family.lower() in w.lower() or given.lower() in w.lower() for w in warnings)
    assert store.audit(uid) == [] and not at.success
    # a date alone is flagged too
    at = save("unchanged since 04/11/2021")
    assert any("a date" in w for w in (w.value for w in at.warning)) and store.audit(uid) == []
    # an ordinary clinical comment saves without a warning
    at = save("mild cardiomegaly, agree")
    assert any("Saved 1 decision(s)" in s.value for s in at.success)
    assert [r.comment for r in store.audit(uid)] == ["mild cardiomegaly, agree"]
    assert not [w for w in at.warning if "seems to contain" in w.value]
    # the reviewer may confirm a flagged comment explicitly (it stays out of exports unless asked)
    at = save("unchanged since 04/11/2021")
    at = save("unchanged since 04/11/2021", confirm=True)
    assert [r.comment for r in store.audit(uid)][-1] == "unchanged since 04/11/2021"


def test_a_verified_sr_reaches_the_pacs_once(review_project, tmp_path, monkeypatch) -> None:
    with running_orthanc(tmp_path / "orthanc") as pacs:
        settings = dataclasses.replace(
            review_project.settings(tmp_path / "review.sqlite"), stow_url=pacs.dicomweb_url, organization="Radiology"
        )
        for key, value in settings.to_env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("MEDFUSION_DICOMWEB_USER", pacs.username)
        monkeypatch.setenv("MEDFUSION_DICOMWEB_PASSWORD", pacs.password)
        torch.set_num_threads(1)
        at = _login(AppTest.from_file(str(APP), default_timeout=120).run(), "dr.alice", PASSWORD)
        uid = at.dataframe[0].value["study_uid"].iloc[-1]
        at.selectbox(key="open_uid").select(uid)
        at = at.button(key="open_study").click().run()
        at.radio(key=f"d_{uid}_nodule").set_value("disagree")
        at = _button(at, "Save decisions").click().run()
        for _ in range(2):  # the second send stores nothing new: same SOP Instance UID
            at = at.button(key=f"vsr_{uid}").click().run()
            assert not at.exception, at.exception
            assert [s.value for s in at.success][-1] == "Verified SR sent to the PACS."
        (stored,) = stored_srs(pacs, uid)  # the model's SR was never sent here: only the verified one
        assert (stored.VerificationFlag, str(stored.VerifyingObserverSequence[0].VerifyingObserverName)) == (
            "VERIFIED",
            "Alice^Reviewer",
        )
        assert stored.VerifyingObserverSequence[0].VerifyingOrganization == "Radiology"
        assert instance_count(pacs) == 1
