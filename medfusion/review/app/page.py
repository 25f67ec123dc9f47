"""medfusion review dashboard: login -> worklist -> study view -> per-label decision (audited).

Start it with ``medfusion review`` (which sets the configuration in the environment, see
:mod:`medfusion.review.settings`). Everything it computes comes from ``medfusion``: scores from the
scoring output, explanations from :mod:`medfusion.explain`, decisions into
:class:`medfusion.review.store.ReviewStore`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st

from medfusion.errors import InputRejected, MedfusionError
from medfusion.privacy import install_log_redaction
from medfusion.processing.spec import FramePolicy
from medfusion.results import ResultRow, labels_of
from medfusion.review.auth import Authenticator, LoginRefused, LoginThrottle, User
from medfusion.review.comment_guard import comment_findings
from medfusion.review.comment_guard import describe as describe_findings
from medfusion.review.data import (
    ReviewModel,
    load_review_model,
    model_uri_for,
    read_scores,
    study_input,
)
from medfusion.review.explanations import ExplanationCache, explain_lazily
from medfusion.review.export import fhir_ndjson, labels_frame
from medfusion.review.panels import (
    contributions_table_html,
    evidence_methods,
    failed_checks,
    probability_table_html,
    word_evidence_html,
)
from medfusion.review.settings import ReviewSettings
from medfusion.review.store import DECISIONS, Decision, DecisionKind, ReviewStore, Shown
from medfusion.review.verified_sr import issue_verified_sr, send_verified_sr, unverified_sr
from medfusion.review.view import (
    DisplayImage,
    load_display_image,
)
from medfusion.review.viewer import pending_measurement
from medfusion.review.viewer.panel import last_ctr_text
from medfusion.review.worklist import (
    SORTS,
    STATES,
    WorklistQuery,
    build_worklist,
)

if TYPE_CHECKING:
    import pandas as pd

    from medfusion.explain.explanation import StudyExplanation

install_log_redaction()  # Streamlit runs the app in its own process: redact identifiers in its logs too
st.set_page_config(page_title="medfusion review", page_icon=":material/radiology:", layout="wide")
st.markdown(
    "<style>.block-container{padding-top:2.2rem;padding-bottom:1rem}"
    "div[data-testid='stMetricValue']{font-size:1.4rem}</style>",
    unsafe_allow_html=True,
)

HEATMAP_NAMES = {"saliency": "Saliency (SmoothGrad)", "gradcam": "Grad-CAM", "cross_attention": "Cross-attention"}
TOKEN_NAMES = {"occlusion": "Word deletion", "gradient": "Integrated gradients", "attention": "Attention rollout"}
SORT_NAMES = {
    "priority": "Priority (most suspicious first)",
    "uncertain": "Closest to threshold",
    "probability": "Highest probability",
    "study": "Study UID",
}


# ---------------------------------------------------------------------------------- resources


def _settings() -> ReviewSettings:
    return ReviewSettings.from_env()  # not cached: cheap, and the environment is the configuration


@st.cache_resource
def _throttle() -> LoginThrottle:
    return LoginThrottle()


@st.cache_resource(show_spinner="Loading the model...")
def _model(uri: str, tracking_uri: str | None, cache_dir: str) -> ReviewModel:
    return load_review_model(uri, tracking_uri, Path(cache_dir))


@st.cache_data(ttl=30, show_spinner=False)
def _scores(results_dir: str) -> pd.DataFrame:
    return read_scores(results_dir)


@st.cache_resource
def _explanations() -> ExplanationCache:
    return ExplanationCache()  # shared by every session, bounded


def _explanation(
    model: ReviewModel, results_dir: str, uid: str, methods: tuple[str, ...] = (), label: str | None = None
) -> StudyExplanation:
    """The study's explanation with ``methods`` for ``label`` (lazy: the rest is computed when asked for),
    from the shared cache, else computed here behind a progress bar.

    Abandoned (``st.stop``) as soon as this session has moved to another study, and stopped by
    Streamlit itself (at the progress update) when this run has been superseded, so stale work
    neither piles up nor holds the model.
    """
    cache, key = _explanations(), (model.uri, results_dir, uid)
    bar = st.empty()
    shown: dict[str, Any] = {"at": 0.0, "state": ("", -1.0)}  # last progress update: time, (step, fraction)

    def checkpoint(step: str, done: float) -> None:
        if st.session_state.get("study") != uid:
            st.stop()  # the reviewer has left this study
        state = (step, round(done, 2))
        if state != shown["state"] or time.monotonic() - shown["at"] >= 1.0:  # a delta: a yield point
            text = "Waiting for another explanation..." if step == "waiting" else f"Computing explanations: {step}"
            bar.progress(min(max(done, 0.0), 1.0), text=text)  # appears only once something is computed
            shown.update(at=time.monotonic(), state=state)

    try:
        labels = [label] if label is not None else None
        study = study_input(results_dir, uid)
        explanation = explain_lazily(cache, key, model.predictor, study, methods, labels, checkpoint=checkpoint)
    except (InputRejected, MedfusionError):
        bar.empty()  # the caller shows the error instead
        raise
    bar.empty()
    return explanation


@st.cache_data(max_entries=16, show_spinner=False)
def _display_image(results_dir: str, study_uid: str, frame_policy: FramePolicy) -> DisplayImage | None:
    paths = study_input(results_dir, study_uid).image_paths
    return load_display_image(paths, frame_policy) if paths else None


def _store(settings: ReviewSettings) -> ReviewStore:
    return ReviewStore(settings.store_location)


# -------------------------------------------------------------------------------------- login


def _login(settings: ReviewSettings) -> User | None:
    auth = Authenticator(settings.users_path, _throttle(), settings.login_delay_s, settings.trusted_header)
    if "user" in st.session_state:
        return st.session_state["user"]
    header_user = auth.from_headers(st.context.headers) if settings.trusted_header else None
    if header_user is not None:
        st.session_state["user"] = header_user
        return header_user
    _, middle, _ = st.columns([1, 1.1, 1])
    with middle:
        st.title("medfusion review")
        st.caption("Research use only. Model outputs are UNVERIFIED until a clinician reviews them.")
        with st.form("login"):
            name = st.text_input("User name", key="login_name")
            password = st.text_input("Password", type="password", key="login_password")
            submitted = st.form_submit_button("Sign in", type="primary", width="stretch")
        if submitted:
            try:
                st.session_state["user"] = auth.login(name, password)
            except LoginRefused as refused:
                st.error(str(refused))
                return None
            st.rerun()
    return None


# ----------------------------------------------------------------------------------- sidebar


def _sidebar(user: User, settings: ReviewSettings, labels: list[str], store: ReviewStore) -> WorklistQuery:
    with st.sidebar:
        st.markdown(f"**{user.name}** · {user.role}")
        if user.via == "password" and st.button("Sign out", key="logout"):
            for key in list(st.session_state.keys()):
                del st.session_state[key]
            st.rerun()
        st.divider()
        st.subheader("Worklist")
        label = st.selectbox("Label", ["all labels", *labels], key="f_label")
        prob = st.slider("Probability", 0.0, 1.0, (0.0, 1.0), 0.05, key="f_prob")
        states: list[str] = st.multiselect(
            "Review state", list(STATES), default=["unreviewed", "partial"], key="f_states"
        )
        positive = st.checkbox("Positive calls only", key="f_positive")
        sort = st.selectbox(
            "Sort",
            list(SORTS),
            key="f_sort",
            format_func=lambda key: str(SORT_NAMES.get(key)),
        )
        if user.can_decide:
            st.divider()
            st.subheader("Export reviewed labels")
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            st.download_button(
                "Labels (CSV)",
                labels_frame(store, labels).to_csv(index=False),
                f"reviewed_labels_{stamp}.csv",
                "text/csv",
                key="export_csv",
                width="stretch",
            )
            st.download_button(
                "FHIR R5 (NDJSON)",
                fhir_ndjson(store),
                f"reviewed_labels_{stamp}.ndjson",
                "application/fhir+ndjson",
                key="export_fhir",
                width="stretch",
            )
        st.caption(f"Results: `{settings.results_dir.name}` · store: `{settings.store_label}`")
    return WorklistQuery(
        label=None if label == "all labels" else label,
        prob_min=prob[0],
        prob_max=prob[1],
        states=tuple(states),
        positive_only=positive,
        sort=sort if sort is not None else SORTS[0],
    )


# ---------------------------------------------------------------------------------- worklist


def _worklist_page(worklist: pd.DataFrame, labels: list[str], total: int, store: ReviewStore) -> None:
    st.title("Worklist")
    current = store.current_frame()
    reviewed = current["study_uid"].nunique() if len(current) else 0
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Scored studies", total)
    c2.metric("Shown", len(worklist))
    c3.metric("Studies with decisions", reviewed)
    c4.metric("Label decisions", len(current))
    if worklist.empty:
        st.info("No study matches the filters.")
        return
    table = worklist[["study_uid", "positives", "top_label", "top_prob", "margin", "reviewed", "state"]]
    event = st.dataframe(
        table,
        key="worklist_table",
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        height=min(38 + 35 * len(table), 560),
        width="stretch",
        column_config={
            "study_uid": st.column_config.TextColumn("Study UID", width="medium"),
            "positives": st.column_config.TextColumn("Positive calls", width="medium"),
            "top_label": st.column_config.TextColumn("Focus label"),
            "top_prob": st.column_config.ProgressColumn("Probability", format="%.2f", min_value=0.0, max_value=1.0),
            "margin": st.column_config.NumberColumn("|p - t|", format="%.2f"),
            "reviewed": st.column_config.TextColumn("Reviewed"),
            "state": st.column_config.TextColumn("State"),
        },
    )
    rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
    uids = list(worklist["study_uid"])
    default = rows[0] if rows else 0
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    chosen = left.selectbox("Study", uids, index=default, key="open_uid")
    if right.button("Open study", type="primary", key="open_study", width="stretch") or rows:
        st.session_state["study"] = chosen if not rows else uids[rows[0]]
        st.session_state["queue"] = uids
        st.rerun()


# ------------------------------------------------------------------------------------- study


def _focus(ex: StudyExplanation) -> int:
    """Index of the label furthest above (or least below) its threshold: the one to look at first."""
    return int(np.argmax(np.asarray(ex.probabilities) - np.asarray(ex.thresholds)))


def _image_panel(
    ex: StudyExplanation,
    image: DisplayImage | None,
    labels: list[str],
    uid: str,
    more: Callable[[tuple[str, ...], str], StudyExplanation],
    failed: dict[str, str],
) -> tuple[list[str], float | None]:
    """Draws the viewer (series, window presets, zoom/pan, CTR calipers, header) with the heatmap overlay;
    returns (heatmap methods shown, opacity or None)."""
    from medfusion.review.viewer.panel import image_panel

    return image_panel(
        ex,
        image,
        labels,
        uid,
        paths=study_input(str(_settings().results_dir), uid).image_paths,
        heatmap_names=HEATMAP_NAMES,
        focus=_focus(ex),
        user=st.session_state.get("user"),
        more=more,
        failed=failed,
    )


def _report_panel(
    ex: StudyExplanation,
    labels: list[str],
    uid: str,
    more: Callable[[tuple[str, ...], str], StudyExplanation],
    failed: dict[str, str],
) -> list[str]:
    """The report with word evidence (orange for, blue against the label; negations underlined); a
    method that failed its recorded faithfulness check is not offered."""
    methods, hidden = evidence_methods(ex.available, list(TOKEN_NAMES), failed)
    if not ex.report_text:
        st.info("This study has no report.")
        return []
    c1, c2 = st.columns(2)
    method = c1.selectbox(
        "Token evidence",
        ["none", *methods],
        index=1 if methods else 0,
        key=f"tm_{uid}",
        format_func=lambda m: TOKEN_NAMES.get(m, "None"),
    )
    tok_label = c2.selectbox("For label", labels, index=_focus(ex), key=f"tml_{uid}")
    if method != "none":
        ex = more((method,), tok_label)
    scores = ex.word_scores[method][labels.index(tok_label)] if method != "none" else None
    st.markdown(
        '<div style="line-height:1.6;font-size:0.95rem;padding:0.6rem 0.8rem;border:1px solid rgba(128,128,128,0.35);'
        'border-radius:6px;max-height:260px;overflow-y:auto">'
        f"{word_evidence_html(ex.report_text, ex.words, scores, ex.negation_scopes)}</div>",
        unsafe_allow_html=True,
    )
    for m, reason in hidden.items():
        st.caption(f"{TOKEN_NAMES[m]}: not shown, {reason}.")
    return [method] if method != "none" else []


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _decision_form(
    user: User,
    result: ResultRow,
    store: ReviewStore,
    shown_methods: list[str],
    opacity: float | None,
    uid: str,
    results_dir: str,
) -> None:
    current = {r.label: r for r in store.current(uid)}
    if last_ctr := last_ctr_text(store.measurements(uid)):
        st.caption(last_ctr)
    held = st.session_state.get(f"cflag_{uid}")  # (digest, warning) of a save held back for its comment
    flagged = held[1] if held and held[0] == _digest(str(st.session_state.get(f"c_{uid}") or "").strip()) else None
    with st.form(f"decide_{uid}", border=True):
        st.markdown("**Your decision per label** (leave a label blank to skip it)")
        choices: dict[str, tuple[DecisionKind | None, str | None, float, float]] = {}
        for label, p, t, positive in zip(
            result.labels, result.probabilities, result.thresholds, result.decisions, strict=True
        ):
            p, t, call = float(p), float(t), "positive" if positive else "negative"
            c1, c2, c3 = st.columns([1.3, 2.2, 1.3], vertical_alignment="center")
            before = current.get(label)
            c1.markdown(
                f"**{label}**  \nmodel: {call} ({p:.2f})" + (f"  \n_saved: {before.decision}_" if before else "")
            )
            kind = c2.radio(
                label,
                DECISIONS,
                index=None,
                horizontal=True,
                key=f"d_{uid}_{label}",
                label_visibility="collapsed",
                disabled=not user.can_decide,
            )
            value = c3.selectbox(
                "Corrected value",
                ["present", "absent"],
                index=None,
                key=f"v_{uid}_{label}",
                label_visibility="collapsed",
                placeholder="corrected value",
                disabled=not user.can_decide,
            )
            choices[label] = (kind, value, p, t)
        comment = st.text_area(
            "Comment (no patient identifiers)", key=f"c_{uid}", height=70, disabled=not user.can_decide
        )
        confirmed = False
        if flagged:
            st.warning(flagged, icon=":material/warning:")
            confirmed = st.checkbox("The comment holds no patient identifier: save it as written", key=f"cok_{uid}")
        saved = st.form_submit_button("Save decisions", type="primary", disabled=not user.can_decide)
    if not saved:
        return
    comment = comment.strip()
    findings = comment_findings(comment, study_input(results_dir, uid).image_paths) if comment else ()
    if findings and not confirmed:
        st.session_state[f"cflag_{uid}"] = (_digest(comment), describe_findings(findings))  # kinds only, never the text
        st.rerun()
    decisions = []
    for label, (kind, value, p, t) in choices.items():
        if kind is None:
            continue
        decisions.append(
            Decision(
                study_uid=uid,
                label=label,
                decision=kind,
                reviewer=user.name,
                model_name=result.provenance.model_name,
                model_version=result.provenance.model_version,
                shown=Shown(p, t, tuple(shown_methods), opacity),
                corrected_value=None if kind != "corrected" or value is None else value == "present",
                comment=comment,
            )
        )
    if not decisions:
        st.warning("Choose agree, disagree or corrected for at least one label.")
        return
    try:
        stored = store.record_many(decisions, [m] if (m := pending_measurement(uid)) is not None else [])
    except InputRejected as rejected:
        st.error(f"Not saved: {rejected.reason}.")
        return
    st.session_state.pop(f"cflag_{uid}", None)
    st.session_state.pop(f"ctr_{uid}", None)  # saved with them
    st.success(f"Saved {len(stored)} decision(s) at {stored[0].decided_at}.")


def _verified_sr_panel(user: User, result: ResultRow, store: ReviewStore, uid: str, settings: ReviewSettings) -> None:
    """Issue a VERIFIED DICOM SR from the saved decisions, when batch scoring wrote the study's SR."""
    results_dir = settings.results_dir
    if not user.can_decide or unverified_sr(results_dir, result) is None:
        return
    current = store.current(uid)
    if not current:
        return
    if st.button(
        "Issue verified SR",
        key=f"vsr_{uid}",
        help=f"A VERIFIED DICOM SR of your saved decisions, signed '{user.signature}', superseding the model's SR.",
    ):
        try:
            path = issue_verified_sr(results_dir, result, current, user.signature, settings.organization)
        except MedfusionError as exc:
            st.error(f"No verified SR: {exc}")
            return
        st.success(f"Verified SR written: {path.relative_to(results_dir)}")
        if settings.stow_url:
            try:
                send_verified_sr(path, settings.stow_url)
            except InputRejected as exc:
                st.error(f"Not sent to the PACS (the file is kept; try again): {exc.reason}")
                return
            st.success("Verified SR sent to the PACS.")


def _study_page(
    user: User, settings: ReviewSettings, results: pd.DataFrame, labels: list[str], store: ReviewStore
) -> None:
    uid = st.session_state["study"]
    queue = st.session_state.get("queue", [uid])
    pos = queue.index(uid) if uid in queue else 0
    nav = st.columns([1, 1, 1, 5], vertical_alignment="center")
    if nav[0].button("← Worklist", key="back"):
        del st.session_state["study"]
        st.rerun()
    if nav[1].button("‹ Previous", key="prev", disabled=pos == 0):
        st.session_state["study"] = queue[pos - 1]
        st.rerun()
    if nav[2].button("Next ›", key="next", disabled=pos >= len(queue) - 1):
        st.session_state["study"] = queue[pos + 1]
        st.rerun()
    nav[3].markdown(f"Study **{pos + 1} / {len(queue)}** &nbsp; `{uid}`")
    matches = results[results["study_uid"] == uid]
    if matches.empty:
        st.error("This study is not in the scoring output.")
        return
    try:
        result = ResultRow.from_record(matches.iloc[0], labels)
        model = _model(model_uri_for(settings, results), settings.tracking_uri, str(settings.results_dir / "model"))
        ex = _explanation(model, str(settings.results_dir), uid)  # the forward pass only: maps come when shown
        image = _display_image(str(settings.results_dir), uid, model.predictor.loaded.preprocessing.frame_policy)
    except (InputRejected, MedfusionError) as err:
        st.error(f"Cannot show this study: {err}")
        return
    scored_by = result.provenance
    if (model.name, model.version) != (scored_by.model_name, scored_by.model_version):
        st.warning(
            f"Explanations use {model.name} v{model.version}; "
            f"the scores come from {scored_by.model_name} v{scored_by.model_version}."
        )

    def more(methods: tuple[str, ...], label: str) -> StudyExplanation:
        return _explanation(model, str(settings.results_dir), uid, methods, label)

    failed = failed_checks(model.model_dir, model.predictor.loaded.model_id)
    left, right = st.columns([1.25, 1], gap="large")
    with left:
        shown_maps, opacity = _image_panel(ex, image, labels, uid, more, failed)
    with right:
        st.markdown("##### Probabilities vs thresholds")
        st.markdown(probability_table_html(labels, result.probabilities, result.thresholds), unsafe_allow_html=True)
        st.caption(
            f"Model {scored_by.model_name} v{scored_by.model_version} ({scored_by.model_id}) · "
            f"scored {result.scored_at} · {scored_by.status}"
        )
        st.markdown("##### Report")
        shown_tokens = _report_panel(ex, labels, uid, more, failed)
        with st.expander("Modality contributions (signed logit)", expanded=True):
            st.markdown(contributions_table_html(labels, ex.modality_contributions), unsafe_allow_html=True)
    _decision_form(user, result, store, shown_maps + shown_tokens, opacity, uid, str(settings.results_dir))
    _verified_sr_panel(user, result, store, uid, settings)
    history = store.audit(uid)
    if history:
        with st.expander(f"Audit trail ({len(history)} entries)"):
            st.dataframe(
                [
                    {
                        "time (UTC)": r.decided_at,
                        "reviewer": r.reviewer,
                        "label": r.label,
                        "decision": r.decision,
                        "value": int(r.reviewed_value),
                        "model": f"{r.model_name} v{r.model_version}",
                        "shown p": round(r.shown.probability, 3),
                        "comment": r.comment,
                    }
                    for r in reversed(history)
                ],
                hide_index=True,
                width="stretch",
            )


# --------------------------------------------------------------------------------------- main


def main() -> None:
    try:
        settings = _settings()
    except MedfusionError as err:
        st.error(str(err))
        return
    user = _login(settings)
    if user is None:
        return
    results = _scores(str(settings.results_dir))
    labels = labels_of(results)
    store = _store(settings)
    query = _sidebar(user, settings, labels, store)
    if "study" in st.session_state:
        _study_page(user, settings, results, labels, store)
    else:
        _worklist_page(build_worklist(results, store.current_frame(), query), labels, len(results), store)


main()
