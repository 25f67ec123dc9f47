"""The app's pages under AppTest: study links (before and after login), drafts across Next, identifiers by role,
the hospital login button (the admin page, a URL path AppTest cannot open, is in the Chromium test)."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys

import pydicom
import pytest
import torch
from streamlit.testing.v1 import AppTest

from medfusion.results import labels_of
from medfusion.review import identifiers, worklist
from medfusion.review.auth import add_user
from medfusion.review.data import study_input
from medfusion.review.launch import APP_PATH
from medfusion.review.settings import ENV_OIDC_ROLES
from medfusion.review.store import Decision, DecisionRecord, ReviewStore, Shown
from medfusion.scoring import read_results
from tests.review.conftest import PASSWORD

OHIF = "https://pacs.example/ohif/viewer?StudyInstanceUIDs={study_uid}"

AUTH = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "0123456789abcdef0123456789abcdef",
    "client_id": "medfusion-review",
    "client_secret": "test-client-secret",
    "server_metadata_url": "https://idp.invalid/.well-known/openid-configuration",
}


@pytest.fixture
def app_env(review_project, tmp_path, monkeypatch):
    users = tmp_path / "users.yaml"
    users.write_text(review_project.users_path.read_text())
    add_user(users, "dr.ids", PASSWORD, role="reviewer", identifiers=True)
    add_user(users, "boss", PASSWORD, role="admin")
    settings = review_project.settings(tmp_path / "review.sqlite")
    env = {**settings.to_env(), "MEDFUSION_REVIEW_USERS": str(users), "MEDFUSION_REVIEW_VIEWER_URL": OHIF}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    torch.set_num_threads(1)
    return settings


def _login(at: AppTest, name: str) -> AppTest:
    at.text_input(key="login_name").input(name)
    at.text_input(key="login_password").input(PASSWORD)
    return next(b for b in at.button if b.label == "Sign in").click().run()


def _texts(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(e.value for e in at.error)


def test_a_study_link_survives_the_login_and_opens_that_study(app_env, review_project) -> None:
    results = read_results(review_project.results_dir)
    uid = str(results["study_uid"].iloc[-1])  # not the worklist's first study
    at = AppTest.from_file(str(APP_PATH), default_timeout=180)
    at.query_params["study"] = uid
    at = at.run()
    assert at.text_input(key="login_password") is not None and not at.exception
    at = _login(at, "dr.alice")
    assert not at.exception, at.exception
    assert at.session_state["study"] == uid and at.query_params["study"] == uid
    assert any(uid in m.value and "Study **" in m.value for m in at.markdown)
    assert any("wheel: zoom" in c.value for c in at.caption), "the study's image is in the viewer"
    assert [r.options for r in at.radio if r.key == f"d_{uid}_nodule"] == [["agree", "disagree (the opposite value)"]]


def test_an_unknown_study_link_says_so(app_env) -> None:
    at = AppTest.from_file(str(APP_PATH), default_timeout=120)
    at.query_params["study"] = "1.2.3.999"
    at = _login(at.run(), "dr.alice")
    assert not at.exception, at.exception
    assert any("Study `1.2.3.999` is not in this scoring output" in e.value for e in at.error)


def test_next_keeps_unsaved_drafts_warns_and_saves_them_later(app_env, review_project) -> None:
    at = _login(AppTest.from_file(str(APP_PATH), default_timeout=180).run(), "dr.alice")
    queue = list(at.dataframe[0].value["study_uid"])
    first, second = queue[0], queue[1]
    at = at.button(key="open_study").click().run()
    assert at.query_params["study"] == first
    # keyboard path: the focused label is the first; "a" agrees and moves down, "d" disagrees
    at = at.button(key="kb_agree").click().run()
    at = at.button(key="kb_disagree").click().run()
    labels = list(read_results(review_project.results_dir).filter(like="prob_").columns.str[5:])
    assert at.radio(key=f"d_{first}_{labels[0]}").value == "agree"
    assert at.radio(key=f"d_{first}_{labels[1]}").value == "disagree"
    assert any("unsaved" in m.value for m in at.markdown)
    at = at.button(key="next").click().run()
    assert not at.exception, at.exception
    assert at.query_params["study"] == second and at.session_state["study"] == second
    assert any(f"Study `{first}` has 2 unsaved decision(s)" in w.value for w in at.warning)
    store = ReviewStore(app_env.store_path)
    assert store.audit(first) == []
    at = at.button(key="prev").click().run()  # back: the drafts are there again, and save
    assert at.radio(key=f"d_{first}_{labels[0]}").value == "agree"
    at = at.button(key="save").click().run()
    assert not at.exception, at.exception
    assert any("Saved 2 decision(s)" in s.value for s in at.success)
    rows = {r.label: (r.decision, r.reviewed_value, r.corrected_value) for r in store.audit(first)}
    assert set(rows) == {labels[0], labels[1]}
    assert rows[labels[1]][0] == "disagree" and rows[labels[1]][2] is None  # no corrected value for yes/no labels
    assert not any("● unsaved" in m.value for m in at.markdown)


def test_identifiers_only_for_permitted_users(app_env, review_project, monkeypatch) -> None:
    at = _login(AppTest.from_file(str(APP_PATH), default_timeout=120).run(), "dr.alice")
    plain = at.dataframe[0].value
    assert not {"accession", "study_date", "age", "sex"} & set(plain.columns)
    assert plain["pacs"].iloc[0] == OHIF.replace("{study_uid}", plain["study_uid"].iloc[0])
    at = _login(AppTest.from_file(str(APP_PATH), default_timeout=120).run(), "dr.ids")
    table = at.dataframe[0].value
    uid = table["study_uid"].iloc[0]
    header = pydicom.dcmread(study_input(review_project.results_dir, uid).image_paths[0], stop_before_pixels=True)
    row = table.iloc[0]
    assert row["accession"] == str(header.get("AccessionNumber", "")).strip()
    date = str(header.get("StudyDate", ""))
    assert row["study_date"] == (f"{date[:4]}-{date[4:6]}-{date[6:]}" if date else "")
    assert row["sex"] == str(header.get("PatientSex", ""))[:1]
    # a page at a time (a header read per row and per click): page 2 holds the next rows, read too
    order = list(table["study_uid"])
    monkeypatch.setattr(worklist, "PAGE_ROWS", 3)
    at = at.run()
    assert list(at.dataframe[0].value["study_uid"]) == order[:3]
    at = at.number_input(key="wl_page").set_value(2).run()
    page = at.dataframe[0].value
    assert list(page["study_uid"]) == order[3:6]
    columns = list(identifiers.COLUMNS)
    read = [
        identifiers.read_identifiers(study_input(review_project.results_dir, u).image_paths).as_row()
        for u in order[3:6]
    ]
    assert page[columns].to_dict("records") == read and all(any(row.values()) for row in read)
    at = at.checkbox(key="f_positive").check().run()  # another list: from its first page
    assert at.number_input(key="wl_page").value == 1
    # never in the audit trail: a stored decision has no field for them
    assert not {"accession", "study_date", "age", "sex"} & {f.name for f in dataclasses.fields(DecisionRecord)}


def test_hospital_login_button_calls_st_login_when_configured(app_env, monkeypatch) -> None:
    from streamlit.runtime import secrets as st_secrets

    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.secrets["auth"] = AUTH
    at = at.run()
    assert any("Hospital sign-in is not available" in w.value and "OIDC_ROLES" in w.value for w in at.warning)
    assert not [b for b in at.button if b.key == "oidc_login"]
    monkeypatch.setenv(ENV_OIDC_ROLES, "rad=reviewer")
    at = at.run()
    assert not at.warning
    # st.login validates Streamlit's own secrets (the file's), which AppTest's at.secrets does not reach
    monkeypatch.setattr(st_secrets.secrets_singleton, "_secrets", {"auth": AUTH})
    at = at.button(key="oidc_login").click().run()
    assert not at.exception, at.exception
    assert "user" not in at.session_state  # the browser is sent to the provider: nobody is signed in yet


def test_a_hospital_identity_gets_the_role_its_claim_maps_to(app_env, monkeypatch) -> None:
    """``st.user`` as Streamlit fills it after an OIDC login (AppTest's ``user``; no provider runs here)."""
    monkeypatch.setenv(ENV_OIDC_ROLES, "rad-attending=reviewer+identifiers,rad-resident=viewer")
    monkeypatch.setenv("MEDFUSION_REVIEW_OIDC_ROLE_CLAIM", "groups")
    at = AppTest.from_file(str(APP_PATH), default_timeout=120)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "preferred_username": "dr.oidc", "groups": ["nurses", "rad-attending"]}
    at = at.run()
    assert not at.exception, at.exception
    user = at.session_state["user"]
    assert (user.name, user.role, user.via, user.may_see_identifiers) == ("dr.oidc", "reviewer", "oidc", True)
    assert "accession" in at.dataframe[0].value.columns
    at = AppTest.from_file(str(APP_PATH), default_timeout=120)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "preferred_username": "x", "groups": ["nurses"]}
    at = at.run()
    assert "user" not in at.session_state
    assert any("has no medfusion role (claim 'groups')" in e.value for e in at.error)


#: What the model and its explanations import; the login, worklist and audit pages need none of it.
MODEL_STACK = ("torch", "monai", "transformers", "mlflow", "sklearn", "captum", "highdicom")

_PAGES_THEN_A_STUDY = f"""
import sys
from streamlit.testing.v1 import AppTest

def loaded():
    return sorted(m for m in {MODEL_STACK!r} if m in sys.modules)

at = AppTest.from_file({str(APP_PATH)!r}, default_timeout=240).run()
print("login", loaded())
at.text_input(key="login_name").input("dr.alice")
at.text_input(key="login_password").input({PASSWORD!r})
at = next(b for b in at.button if b.label == "Sign in").click().run()
assert not at.exception and at.dataframe, at.exception
print("worklist", loaded())
at.selectbox(key="open_uid").select(at.dataframe[0].value["study_uid"].iloc[0])
at = at.button(key="open_study").click().run()
assert not at.exception, at.exception
print("study", loaded())
"""


def test_login_and_worklist_come_before_the_model_stack_is_imported(app_env) -> None:
    """A restarted server answers its first visitor without first importing torch, MONAI and the rest
    (about 15 s here): they are imported when a study is opened, with the model."""
    out = subprocess.run(
        [sys.executable, "-c", _PAGES_THEN_A_STUDY], capture_output=True, text=True, timeout=600, env=os.environ
    )
    assert out.returncode == 0, out.stderr[-3000:]
    steps = {}
    for line in out.stdout.splitlines():
        step, _, modules = line.partition(" ")
        if step in {"login", "worklist", "study"}:
            steps[step] = ast.literal_eval(modules)
    assert steps["login"] == [] and steps["worklist"] == [], steps
    assert {"torch", "monai", "transformers"} <= set(steps["study"]), steps  # the check can see them


def test_the_worklist_page_stays_in_range_as_reviewed_studies_leave_the_list(app_env, monkeypatch) -> None:
    monkeypatch.setattr(worklist, "PAGE_ROWS", 3)
    at = _login(AppTest.from_file(str(APP_PATH), default_timeout=120).run(), "dr.alice")
    pages = at.number_input(key="wl_page").max
    at = at.number_input(key="wl_page").set_value(pages).run()
    shown = list(at.dataframe[0].value["study_uid"])
    assert not at.exception and shown
    results = read_results(app_env.results_dir)
    labels = labels_of(results)
    # another reviewer finishes all but four studies: the default filter (unreviewed, partial) drops them
    keep = set(shown[:1]) | set(results["study_uid"].iloc[:3])
    done = [uid for uid in results["study_uid"] if uid not in keep]
    ReviewStore(app_env.store_path).record_many(
        [Decision(uid, lab, "agree", "dr.bob", "medfusion", "1", Shown(0.5, 0.5)) for uid in done for lab in labels]
    )
    at = at.run()
    assert not at.exception, at.exception
    assert at.number_input(key="wl_page").value == at.number_input(key="wl_page").max == -(-len(keep) // 3)
    assert set(at.dataframe[0].value["study_uid"]) <= keep
