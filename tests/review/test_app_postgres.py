"""The review app on a PostgreSQL store: the URL travels through the environment, the worklist reads
the store's decisions, the sidebar names the store without its password."""

from __future__ import annotations

import torch
from streamlit.testing.v1 import AppTest

from medfusion.review.launch import APP_PATH
from medfusion.review.settings import ReviewSettings
from medfusion.review.store import Decision, ReviewStore, Shown
from medfusion.scoring import read_results
from tests.review.conftest import PASSWORD, ReviewProject
from tests.support.postgres import PostgresServer


def test_the_app_works_on_a_postgresql_store(review_project: ReviewProject, postgres: PostgresServer, monkeypatch):
    dbname = postgres.create_database()
    url = postgres.url(dbname)  # the password in the URL here, to check it never shows
    uid = str(read_results(review_project.results_dir)["study_uid"].iloc[0])
    ReviewStore(url).record(Decision(uid, "nodule", "agree", "dr.other", "medfusion", "1", Shown(0.9, 0.5)))
    settings = ReviewSettings.create(
        review_project.results_dir,
        store_path=url,
        users_path=review_project.users_path,
        tracking_uri=review_project.demo.tracking_uri,
        login_delay_s=0.2,
    )
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    torch.set_num_threads(1)

    at = AppTest.from_file(str(APP_PATH), default_timeout=120).run()
    at.text_input(key="login_name").input("dr.alice")
    at.text_input(key="login_password").input(PASSWORD)
    at = next(b for b in at.button if b.label == "Sign in").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value.set_index("study_uid")
    assert table.loc[uid, "state"] == "partial" and table.loc[uid, "reviewed"].startswith("1/")
    assert (table.drop(index=uid)["state"] == "unreviewed").all()
    texts = [c.value for c in at.sidebar.caption] + [m.value for m in at.markdown]
    assert any(f"postgresql://medfusion@127.0.0.1:{postgres.port}/{dbname}" in t for t in texts)
    assert not any(postgres.password in t for t in texts)
