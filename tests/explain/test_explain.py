"""explain_study on the demo champion (hybrid ResNet-18) and on a late-fusion ViT model."""

from __future__ import annotations

import numpy as np
import pytest

from medfusion.errors import InputRejected, MedfusionError
from medfusion.explain import METHODS, explain_study, explanation_figure, overlay_rgb
from medfusion.inference import StudyInput


def _study(record) -> StudyInput:
    return StudyInput(image_paths=record["image"], report_text=record["report"])


@pytest.fixture(scope="module")
def full_record(demo_test_records):
    return next(r for r in demo_test_records if r["image"] and r["report"])


@pytest.fixture(scope="module")
def explanation(demo_predictor, full_record):
    return explain_study(demo_predictor, _study(full_record))


def test_hybrid_resnet_has_every_method_with_contract_shapes(demo_predictor, explanation):
    ex, n_labels = explanation, len(demo_predictor.labels)
    h, w = demo_predictor.loaded.preprocessing.image_size
    assert ex.labels == demo_predictor.labels
    assert ex.image.shape == (h, w) and ex.image.min() == 0.0 and ex.image.max() == 1.0
    assert set(ex.heatmaps) == {"cross_attention", "gradcam", "saliency"}
    for maps in ex.heatmaps.values():
        assert maps.shape == (n_labels, h, w) and maps.dtype == np.float32
        assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.isclose(ex.heatmaps["gradcam"].max(axis=(1, 2)), 1.0).any()  # not all flat
    assert set(ex.token_scores) == set(ex.word_scores) == {"attention", "gradient", "occlusion"}
    t = len(ex.token_spans)
    special = np.array([a == b for a, b in ex.token_spans])
    assert special[0] and special[-1] and special.sum() == 2  # [CLS] ... [SEP]
    # A label the model reads from the image alone (its fallback gave the text no weight) has no text
    # evidence: its rows are all zero, and only its rows.
    no_text = np.isclose(ex.modality_contributions["text"], 0.0, atol=1e-6) & np.isclose(
        ex.modality_contributions.get("joint", np.zeros(n_labels)), 0.0, atol=1e-6
    )
    for name, scores in ex.token_scores.items():
        assert scores.shape == (n_labels, t) and scores.min() >= 0.0 and scores.max() <= 1.0
        if name == "gradient":
            np.testing.assert_array_equal(scores.max(axis=1) == 0, no_text)
            assert np.allclose(scores.max(axis=1)[~no_text], 1.0)
        elif name == "attention":  # label-agnostic: the encoder's own attention, every row the same
            assert np.allclose(scores.max(axis=1), 1.0)
        assert (scores[:, special] == 0).all()
    w = len(ex.words)
    assert w > 5 and {t for word in ex.words for t in word.tokens}.isdisjoint(np.flatnonzero(special))
    for name, scores in ex.word_scores.items():
        peak = np.abs(scores).max(axis=1)
        assert scores.shape == (n_labels, w) and np.allclose(peak[~no_text], 1.0)
        if name != "attention":
            assert (peak[no_text] == 0).all()
    negated = np.array([word.negated for word in ex.words])
    for name in ("attention", "gradient"):  # unsigned methods take the negation scope's sign
        assert (ex.word_scores[name][:, negated] <= 0).all() and (ex.word_scores[name][:, ~negated] >= 0).all()
    assert ex.available == METHODS
    assert ex.provenance["status"] == "UNVERIFIED" and ex.provenance["model_id"] == demo_predictor.loaded.model_id


def test_token_spans_slice_the_report_into_the_model_tokens(demo_predictor, explanation):
    tokenizer = demo_predictor.loaded.tokenizer
    ids = tokenizer(
        explanation.report_text, truncation=True, max_length=demo_predictor.loaded.preprocessing.max_tokens
    )["input_ids"]
    pieces = [p.removeprefix("##") for p in tokenizer.convert_ids_to_tokens(ids)[1:-1]]
    texts = [explanation.report_text[a:b].lower() for a, b in explanation.token_spans[1:-1]]
    assert texts == pieces


def test_probabilities_match_the_predictor_and_contributions_sum_to_the_logit(demo_predictor, full_record, explanation):
    [prediction] = demo_predictor.predict([_study(full_record)])
    np.testing.assert_allclose(explanation.probabilities, prediction.probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(explanation.thresholds, prediction.thresholds)
    contributions = explanation.modality_contributions
    assert set(contributions) == {"image", "text", "joint"}
    stacking = demo_predictor.loaded.card.stacking
    for m in ("image", "text"):  # weight x the modality's own logit, as defined (per label with stacking)
        weight = prediction.modality_weights[m]
        if stacking is not None:  # w_fused,l * w_m + w_stack_m,l (both modalities present here)
            rows = np.asarray(stacking.weights, dtype=float)  # (L, candidates)
            fused, own = rows[:, stacking.candidates.index("fused")], rows[:, stacking.candidates.index(m)]
            weight = fused * weight + own
        np.testing.assert_allclose(contributions[m], weight * prediction.modality_logits[m], rtol=1e-4, atol=1e-5)
    p = prediction.probabilities
    logit = demo_predictor.loaded.calibration.logits(p)
    np.testing.assert_allclose(sum(contributions.values()), logit, rtol=1e-4, atol=1e-4)


def test_study_without_image_or_report_drops_the_methods_that_need_it(demo_predictor, full_record):
    no_image = explain_study(demo_predictor, StudyInput(image_paths=[], report_text=full_record["report"]))
    assert no_image.image is None and no_image.heatmaps == {}
    assert set(no_image.token_scores) == {"attention", "gradient", "occlusion"}
    assert no_image.modality_contributions["image"].tolist() == [0.0] * len(demo_predictor.labels)  # weight 0
    no_report = explain_study(demo_predictor, StudyInput(image_paths=full_record["image"], report_text=""))
    assert set(no_report.heatmaps) == {"gradcam", "saliency"}  # no text queries, so no cross-attention map
    assert no_report.token_scores == {} and no_report.token_spans == [] and no_report.report_text == ""


def test_methods_can_be_chosen_and_unknown_ones_are_refused(demo_predictor, full_record):
    ex = explain_study(demo_predictor, _study(full_record), methods=("gradient",))
    assert ex.heatmaps == {} and set(ex.token_scores) == {"gradient"}
    with pytest.raises(MedfusionError, match="unknown explanation method"):
        explain_study(demo_predictor, _study(full_record), methods=("lime",))


def test_labels_limit_the_per_label_passes_to_the_same_rows_as_a_full_explanation(
    demo_predictor, full_record, explanation
):
    label = demo_predictor.labels[1]
    part = explain_study(demo_predictor, _study(full_record), ("gradcam", "saliency", "gradient"), labels=[label])
    assert part.computed == {m: frozenset({1}) for m in ("gradcam", "saliency", "gradient")}
    for name in ("gradcam", "saliency"):
        np.testing.assert_allclose(part.heatmaps[name][1], explanation.heatmaps[name][1], atol=1e-6, err_msg=name)
        assert not part.heatmaps[name][[0, 2]].any()
    np.testing.assert_allclose(part.token_scores["gradient"][1], explanation.token_scores["gradient"][1], atol=1e-6)
    with pytest.raises(MedfusionError, match="unknown label"):
        explain_study(demo_predictor, _study(full_record), ("gradient",), labels=["no-such-label"])


def test_unreadable_image_is_rejected(demo_predictor, tmp_path):
    broken = tmp_path / "broken.dcm"
    broken.write_text("not a DICOM file")
    with pytest.raises(InputRejected) as info:
        explain_study(demo_predictor, StudyInput(image_paths=[str(broken)], report_text="FINDINGS: Clear."))
    assert "broken.dcm" in str(info.value)


def test_late_fusion_vit_has_saliency_but_no_cross_attention_and_no_gradcam(late_vit_predictor, synthetic_records):
    record = next(r for r in synthetic_records["test"] if r["image"] and r["report"])
    ex = explain_study(late_vit_predictor, _study(record), METHODS)
    assert ex.image is not None and set(ex.heatmaps) == {"saliency"}
    assert set(ex.token_scores) == {"attention", "gradient", "occlusion"}
    assert ex.available == ("saliency", "attention", "gradient", "occlusion")
    assert set(ex.modality_contributions) == {"image", "text"}  # late fusion has no joint slot
    [prediction] = late_vit_predictor.predict([_study(record)])
    logit = late_vit_predictor.loaded.calibration.logits(prediction.probabilities)
    np.testing.assert_allclose(sum(ex.modality_contributions.values()), logit, rtol=1e-4, atol=1e-4)


def test_overlay_blends_by_opacity_and_figure_has_three_panels(explanation):
    maps = explanation.heatmaps["gradcam"]
    image, heat = explanation.image, maps[int(np.ptp(maps, axis=(1, 2)).argmax())]  # a label with a non-flat map
    gray = overlay_rgb(image, heat, opacity=0.0)
    assert gray.shape == (*image.shape, 3) and gray.dtype == np.uint8
    np.testing.assert_array_equal(gray[..., 0], np.round(255 * image).astype(np.uint8))
    hot = overlay_rgb(image, heat, opacity=1.0)
    assert not np.array_equal(hot, gray)
    assert (
        hot[np.unravel_index(heat.argmax(), heat.shape)].astype(int).sum()
        > hot[np.unravel_index(heat.argmin(), heat.shape)].astype(int).sum()
    )
    with pytest.raises(MedfusionError):
        overlay_rgb(image, heat[:-1], 0.5)
    fig = explanation_figure(explanation, explanation.labels[2])
    assert len(fig.axes) == 3
