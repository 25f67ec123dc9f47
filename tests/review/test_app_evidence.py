"""The study view honours the model's recorded explanation checks (AppTest, the real page script)."""

from __future__ import annotations

import shutil

import torch
from streamlit.testing.v1 import AppTest

from medfusion.explain.checks import record_checks
from medfusion.inference import Predictor
from medfusion.review.launch import APP_PATH
from medfusion.review.settings import ReviewSettings
from tests.review.conftest import PASSWORD


def test_failed_text_methods_are_hidden_and_failed_image_methods_labelled(review_project, tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    shutil.copytree(review_project.demo.model_dir, model_dir)
    model_id = Predictor.from_dir(model_dir, device="cpu").loaded.model_id
    record_checks(
        model_dir,
        model_id,
        {
            "gradient": {"check": "aopc", "passed": False},
            "occlusion": {"check": "aopc", "passed": True},
            "saliency": {"check": "randomisation", "passed": False},
        },
    )
    settings = ReviewSettings.create(
        review_project.results_dir,
        model_uri=str(model_dir),
        store_path=tmp_path / "review.sqlite",
        users_path=review_project.users_path,
        login_delay_s=0.2,
    )
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    torch.set_num_threads(1)
    at = AppTest.from_file(str(APP_PATH), default_timeout=120).run()
    at.text_input(key="login_name").input("dr.alice")
    at.text_input(key="login_password").input(PASSWORD)
    at = next(b for b in at.button if b.label == "Sign in").click().run()
    for uid in at.dataframe[0].value["study_uid"]:  # the first study with an image and a report
        at.selectbox(key="open_uid").select(uid)
        at = at.button(key="open_study").click().run()
        assert not at.exception, at.exception
        keys = {s.key for s in at.selectbox}
        if {f"tm_{uid}", f"hm_{uid}"} <= keys:
            break
        at = at.button(key="back").click().run()
    tokens = at.selectbox(key=f"tm_{uid}")
    assert tokens.options == ["None", "Word deletion", "Attention rollout"] and tokens.value == "occlusion"
    assert any("Integrated gradients: not shown, failed the deletion" in c.value for c in at.caption)
    heatmaps = at.selectbox(key=f"hm_{uid}")
    assert heatmaps.value == "gradcam"  # a method that passed (or was not checked) comes first
    assert "Saliency (SmoothGrad) (failed sanity check)" in heatmaps.options
    at = heatmaps.select("saliency").run()
    assert any("failed the model-randomisation check" in c.value for c in at.caption)
    report = next(m.value for m in at.markdown if "<mark" in m.value)
    assert 'title="negated"' in report or "against the label" in report or "for the label" in report
