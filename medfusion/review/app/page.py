"""medfusion review dashboard: login -> worklist -> study view -> per-label decision (audited).

Pages (``st.navigation``): Worklist (``/worklist``), Study (``/study?study=<StudyInstanceUID>``, a
link that survives reload and login), Audit (``/audit``) and, for the ``admin`` role, Admin
(``/admin``: users, health, settings). Start it with ``medfusion review`` (which sets the
configuration in the environment, see :mod:`medfusion.review.settings`). Everything it computes
comes from ``medfusion``: scores from the scoring output, explanations from :mod:`medfusion.explain`, decisions into
:class:`medfusion.review.store.ReviewStore`.
"""

from __future__ import annotations

import hashlib
import json
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
from medfusion.review import identifiers
from medfusion.review.auth import Authenticator, LoginRefused, LoginThrottle, User, add_user, read_users
from medfusion.review.comment_guard import comment_findings
from medfusion.review.comment_guard import describe as describe_findings
from medfusion.review.data import (
    ReviewModel,
    load_review_model,
    model_uri_for,
    read_scores,
    study_input,
)
from medfusion.review.navigation import BINARY_DECISIONS, STUDY_PARAM, neighbour, unsaved_labels
from medfusion.review.oidc import RoleMap, auth_problems, user_from_claims
from medfusion.review.panels import (
    contributions_table_html,
    evidence_methods,
    failed_checks,
    probability_table_html,
    word_evidence_html,
)
from medfusion.review.settings import ReviewSettings
from medfusion.review.store import Decision, DecisionKind, ReviewStore, Shown
from medfusion.review.view import (
    DisplayImage,
    load_display_image,
)
from medfusion.review.viewer import pending_measurement
from medfusion.review.worklist import (
    SORTS,
    STATES,
    WorklistQuery,
    build_worklist,
    worklist_page,
)

if TYPE_CHECKING:
    from streamlit.navigation.page import StreamlitPage

if TYPE_CHECKING:
    import pandas as pd

    from medfusion.explain.explanation import StudyExplanation
    from medfusion.review.explanations import ExplanationCache

install_log_redaction()  # Streamlit runs the app in its own process: redact identifiers in its logs too
st.set_page_config(page_title="medfusion review", page_icon=":material/radiology:", layout="wide")
st.markdown(
    "<style>.block-container{padding-top:2.2rem;padding-bottom:1rem}"
    "div[data-testid='stMetricValue']{font-size:1.4rem}</style>",
    unsafe_allow_html=True,
)

#: Audit-trail rows listed at most (the newest matching the filters; the count covers them all).
AUDIT_ROWS = 500
HEATMAP_NAMES = {"saliency": "Saliency (SmoothGrad)", "gradcam": "Grad-CAM", "cross_attention": "Cross-attention"}
TOKEN_NAMES = {"occlusion": "Word deletion", "gradient": "Integrated gradients", "attention": "Attention rollout"}
SORT_NAMES = {
    "priority": "Priority (most suspicious first)",
    "uncertain": "Closest to threshold",
    "probability": "Highest probability",
    "study": "Study UID",
}
#: Keyboard shortcuts: key -> (the key of the button it clicks, meaning).
SHORTCUTS = {
    "n": ("next", "next study"),
    "p": ("prev", "previous study"),
    "j": ("kb_down", "focus the next label"),
    "k": ("kb_up", "focus the previous label"),
    "a": ("kb_agree", "agree on the focused label"),
    "d": ("kb_disagree", "disagree on the focused label"),
    "s": ("save", "save the decisions"),
}
#: The shortcuts: a key press clicks the keyed button (``.st-key-<key> button``) unless the reviewer is
#: typing (the comment, the login form, a select box) or the button is disabled; and a warning before a
#: reload or a closed tab drops unsaved drafts. Filled with the key map (JSON) and the unsaved count.
_KEYS_JS = """<script>
(() => {
  const w = window.parent || window, doc = w.document;
  w.__medfusionKeys = %s;
  w.__medfusionUnsaved = %d;
  if (w.__medfusionKeyListener) return;
  w.__medfusionKeyListener = (e) => {
    if (e.ctrlKey || e.altKey || e.metaKey || e.repeat) return;
    const t = e.target;
    if (t && (t.isContentEditable || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' ||
        (t.tagName === 'INPUT' && !['radio', 'checkbox', 'button'].includes(t.type)))) return;
    const key = (w.__medfusionKeys || {})[(e.key || '').toLowerCase()];
    const button = key && doc.querySelector('.st-key-' + key + ' button');
    if (!button || button.disabled) return;
    e.preventDefault();
    button.click();
  };
  doc.addEventListener('keydown', w.__medfusionKeyListener);
  w.addEventListener('beforeunload', (e) => {
    if (w.__medfusionUnsaved > 0) { e.preventDefault(); e.returnValue = ''; }
  });
})();
</script>"""


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
    from medfusion.review.explanations import ExplanationCache

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

    from medfusion.review.explanations import explain_lazily

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


def _oidc(settings: ReviewSettings) -> tuple[RoleMap | None, list[str]]:
    """The hospital login's role map when it is configured and usable, and what is wrong with it otherwise.

    Off (None, no problem) when neither ``secrets.toml`` has an ``[auth]`` table nor a role map is set.
    """
    try:
        auth = st.secrets.get("auth") if st.secrets.load_if_toml_exists() else None
    except Exception:  # noqa: BLE001 - an unreadable secrets.toml: report it, keep the password login
        return None, ["secrets.toml could not be read"]
    if auth is None and not settings.oidc_roles:
        return None, []
    try:
        roles = RoleMap.parse(settings.oidc_role_claim, settings.oidc_roles)
    except MedfusionError as err:
        return None, [str(err)]
    problems = auth_problems(auth, settings.oidc_provider)
    if not roles.grants:
        problems.append("MEDFUSION_REVIEW_OIDC_ROLES maps no claim value to a role: nobody could sign in")
    return (None, problems) if problems else (roles, [])


def _oidc_signed_in() -> bool:
    """Whether Streamlit holds an identity from the provider (``st.user`` has no flag without ``[auth]``)."""
    return bool(st.user.get("is_logged_in", False))


def _login(settings: ReviewSettings) -> User | None:
    """The signed-in user, else the sign-in form (the page's URL and its ``?study=`` are kept throughout)."""
    auth = Authenticator(settings.users_path, _throttle(), settings.login_delay_s, settings.trusted_header)
    if "user" in st.session_state:
        return st.session_state["user"]
    header_user = auth.from_headers(st.context.headers) if settings.trusted_header else None
    if header_user is not None:
        st.session_state["user"] = header_user
        return header_user
    roles, problems = _oidc(settings)
    if roles is not None and _oidc_signed_in():
        user = user_from_claims(st.user.to_dict(), roles)
        if user is not None:
            st.session_state["user"] = user
            return user
    _, middle, _ = st.columns([1, 1.1, 1])
    with middle:
        st.title("medfusion review")
        st.caption("Research use only. Model outputs are UNVERIFIED until a clinician reviews them.")
        if STUDY_PARAM in st.query_params:
            st.caption("Sign in to open the linked study.")
        if roles is not None:
            if _oidc_signed_in():
                st.error(f"Your hospital account has no medfusion role (claim '{roles.claim}'). Ask an administrator.")
                if st.button("Sign out of the hospital account", key="oidc_logout"):
                    st.logout()
            elif st.button("Sign in with the hospital account", key="oidc_login", type="primary", width="stretch"):
                st.login(settings.oidc_provider) if settings.oidc_provider else st.login()
            st.caption("or with a local account:")
        elif problems:
            st.warning("Hospital sign-in is not available: " + "; ".join(problems))
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
            st.rerun()  # same URL: the query string (?study=...) survives
    return None


# ----------------------------------------------------------------------------------- sidebar


def _sidebar(user: User, settings: ReviewSettings, labels: list[str], store: ReviewStore) -> WorklistQuery:
    with st.sidebar:
        st.markdown(f"**{user.name}** · {user.role}")
        if user.via in ("password", "oidc") and st.button("Sign out", key="logout"):
            for key in list(st.session_state.keys()):
                del st.session_state[key]
            if user.via == "oidc":
                st.logout()
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

            def labels_csv() -> str:
                from medfusion.review.export import labels_frame

                return labels_frame(store, labels).to_csv(index=False)

            def labels_fhir() -> str:
                from medfusion.review.export import fhir_ndjson

                return fhir_ndjson(store)

            # Built when clicked (on a thread of their own), not on every rerun: the store only grows.
            st.download_button(
                "Labels (CSV)",
                labels_csv,
                f"reviewed_labels_{stamp}.csv",
                "text/csv",
                key="export_csv",
                width="stretch",
            )
            st.download_button(
                "FHIR R5 (NDJSON)",
                labels_fhir,
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


def _drafts(uid: str) -> dict[str, str | None]:
    """The session's decision drafts of one study (label -> agree/disagree/None), kept across navigation."""
    drafts: dict[str, dict[str, str | None]] = st.session_state.setdefault("drafts", {})
    return drafts.setdefault(uid, {})


def _unsaved(uid: str, store: ReviewStore) -> list[str]:
    """Labels of a study with a drafted decision not saved yet."""
    drafts = st.session_state.get("drafts", {}).get(uid)
    if not drafts:
        return []
    return unsaved_labels(drafts, {r.label: r.decision for r in store.current(uid)})


def _identifier_rows(results_dir: str, uids: list[str]) -> pd.DataFrame:
    """Accession, study date, age and sex per study, read from the headers now (display only, never cached)."""
    import pandas as pd

    rows = []
    for uid in uids:
        try:
            paths = study_input(results_dir, uid).image_paths
        except MedfusionError:
            paths = []
        rows.append(identifiers.read_identifiers(paths).as_row())
    return pd.DataFrame(rows, columns=list(identifiers.COLUMNS))


def _open(uid: str, queue: list[str]) -> None:
    """Open a study: its page, with its UID in the URL."""
    st.session_state["study"] = uid
    st.session_state["queue"] = queue
    st.switch_page(_PAGES["study"], query_params={STUDY_PARAM: uid})


def _worklist_page(
    worklist: pd.DataFrame,
    labels: list[str],
    total: int,
    reviewed: pd.Series,
    query: WorklistQuery,
    store: ReviewStore,
    user: User,
    settings: ReviewSettings,
) -> None:
    """The worklist (``query``'s filters and order, a page at a time); ``reviewed``: labels with a
    current decision per scored study (those with any)."""
    st.title("Worklist")
    _keyboard(store)  # no study keys here; the warning before a reload drops unsaved drafts
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Scored studies", total)
    c2.metric("Shown", len(worklist))
    c3.metric("Studies with decisions", len(reviewed))
    c4.metric("Label decisions", int(reviewed.sum()))
    if worklist.empty:
        st.info("No study matches the filters.")
        return
    if st.session_state.get("wl_query") != query:  # other filters or order: a new list, from its top
        st.session_state["wl_query"] = query
        st.session_state["wl_page"] = 1
    page = worklist_page(worklist, st.session_state.get("wl_page", 1))  # clamped: studies may have left
    if page.pages > 1:
        st.session_state["wl_page"] = page.number  # the control shows the page served
        left, right = st.columns([1, 5], vertical_alignment="center")
        left.number_input("Page", min_value=1, max_value=page.pages, step=1, key="wl_page")
        right.caption(f"of {page.pages} pages, {len(worklist)} studies in the worklist's order")
    uids = list(page.rows["study_uid"])
    table = page.rows[["study_uid", "positives", "top_label", "top_prob", "margin", "reviewed", "state"]].copy()
    table.insert(0, "unsaved", ["● unsaved" if _unsaved(uid, store) else "" for uid in uids])
    columns: dict[str, Any] = {
        "unsaved": st.column_config.TextColumn("Drafts", width="small"),
        "study_uid": st.column_config.TextColumn("Study UID", width="medium"),
        "positives": st.column_config.TextColumn("Positive calls", width="medium"),
        "top_label": st.column_config.TextColumn("Focus label"),
        "top_prob": st.column_config.ProgressColumn("Probability", format="%.2f", min_value=0.0, max_value=1.0),
        "margin": st.column_config.NumberColumn("|p - t|", format="%.2f"),
        "reviewed": st.column_config.TextColumn("Reviewed"),
        "state": st.column_config.TextColumn("State"),
    }
    if user.may_see_identifiers:  # display only: read now (a header per row of the page), never logged,
        ids = _identifier_rows(str(settings.results_dir), uids)  # cached, exported or audited
        for i, column in enumerate(identifiers.COLUMNS):
            table.insert(2 + i, column, list(ids[column]))
        columns |= {
            "accession": st.column_config.TextColumn("Accession"),
            "study_date": st.column_config.TextColumn("Study date"),
            "age": st.column_config.TextColumn("Age", width="small"),
            "sex": st.column_config.TextColumn("Sex", width="small"),
        }
    if settings.viewer_url_template:
        table["pacs"] = [settings.viewer_url(uid) for uid in uids]
        columns["pacs"] = st.column_config.LinkColumn("PACS", display_text="open in PACS viewer")
    event = st.dataframe(
        table,
        key="worklist_table",
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        height=min(38 + 35 * len(table), 560),
        width="stretch",
        column_config=columns,
    )
    rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
    default = rows[0] if rows else 0
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    chosen = left.selectbox("Study", uids, index=default, key="open_uid")
    if right.button("Open study", type="primary", key="open_study", width="stretch") or rows:
        _open(chosen if not rows else uids[rows[0]], list(worklist["study_uid"]))  # next/previous go on past the page


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
    if scores is not None and not np.any(np.asarray(scores)):
        st.caption(f"No word of this report moves the {tok_label} score: the model reads it from the image here.")
    for m, reason in hidden.items():
        st.caption(f"{TOKEN_NAMES[m]}: not shown, {reason}.")
    return [method] if method != "none" else []


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _set_draft(uid: str, label: str) -> None:
    """on_change of a decision radio: mirror it into the study's drafts."""
    _drafts(uid)[label] = st.session_state.get(f"d_{uid}_{label}")


def _key_decide(uid: str, labels: list[str], kind: str | None, move: int) -> None:
    """A shortcut's button: set the focused label's decision (``kind``), then move the focus by ``move``."""
    focus = min(max(int(st.session_state.get(f"focus_{uid}", 0)), 0), len(labels) - 1)
    if kind is not None:
        st.session_state[f"d_{uid}_{labels[focus]}"] = kind
        _drafts(uid)[labels[focus]] = kind
    st.session_state[f"focus_{uid}"] = min(max(focus + move, 0), len(labels) - 1)


def _decision_form(
    user: User,
    result: ResultRow,
    store: ReviewStore,
    shown_methods: list[str],
    opacity: float | None,
    uid: str,
    results_dir: str,
) -> None:
    """Per-label agree/disagree (all labels are yes/no: "disagree" is the opposite value), drafts kept per study.

    Not an ``st.form``: every choice reaches the session at once, so leaving the study keeps it as a
    draft (marked unsaved) instead of dropping it silently.
    """
    from medfusion.review.viewer.panel import last_ctr_text  # reads DICOM (torch): study pages only

    current = {r.label: r for r in store.current(uid)}
    if last_ctr := last_ctr_text(store.measurements(uid)):
        st.caption(last_ctr)
    drafts = _drafts(uid)
    labels = list(result.labels)
    focus = min(max(int(st.session_state.get(f"focus_{uid}", 0)), 0), len(labels) - 1)
    held = st.session_state.get(f"cflag_{uid}")  # (digest, warning) of a save held back for its comment
    flagged = held[1] if held and held[0] == _digest(str(st.session_state.get(f"c_{uid}") or "").strip()) else None
    with st.container(border=True, key=f"decide_{uid}"):
        head, *keys = st.columns([3.2, 1, 1, 0.5, 0.5], vertical_alignment="center")
        head.markdown("**Your decision per label** (leave a label blank to skip it)")
        can = user.can_decide
        keys[0].button(
            "Agree",
            key="kb_agree",
            on_click=_key_decide,
            args=(uid, labels, "agree", 1),
            disabled=not can,
            help="Agree on the focused label ▶ (key a)",
            width="stretch",
        )
        keys[1].button(
            "Disagree",
            key="kb_disagree",
            on_click=_key_decide,
            args=(uid, labels, "disagree", 1),
            disabled=not can,
            help="Disagree on the focused label ▶ (key d)",
            width="stretch",
        )
        keys[2].button("↑", key="kb_up", on_click=_key_decide, args=(uid, labels, None, -1), help="Previous label (k)")
        keys[3].button("↓", key="kb_down", on_click=_key_decide, args=(uid, labels, None, 1), help="Next label (j)")
        choices: dict[str, tuple[DecisionKind | None, float, float]] = {}
        for i, (label, p, t, positive) in enumerate(
            zip(result.labels, result.probabilities, result.thresholds, result.decisions, strict=True)
        ):
            p, t, call = float(p), float(t), "positive" if positive else "negative"
            c1, c2 = st.columns([1.3, 3.5], vertical_alignment="center")
            before = current.get(label)
            key = f"d_{uid}_{label}"
            if key not in st.session_state and drafts.get(label) is not None:
                st.session_state[key] = drafts[label]  # back on a study: its drafts again
            pending = st.session_state.get(key) is not None and (
                before is None or before.decision != st.session_state[key]
            )
            marker = "▶ " if i == focus and can else ""
            c1.markdown(
                f"{marker}**{label}**  \nmodel: {call} ({p:.2f})"
                + (f"  \n_saved: {before.decision}_" if before else "")
                + ("  \n:orange[unsaved]" if pending else "")
            )
            kind: DecisionKind | None = c2.radio(
                label,
                BINARY_DECISIONS,
                index=None,
                horizontal=True,
                key=key,
                label_visibility="collapsed",
                disabled=not can,
                on_change=_set_draft,
                args=(uid, label),
                format_func=lambda k: {"agree": "agree", "disagree": "disagree (the opposite value)"}[k],
            )
            choices[label] = (kind, p, t)
        comment = st.text_area("Comment (no patient identifiers)", key=f"c_{uid}", height=70, disabled=not can)
        confirmed = False
        if flagged:
            st.warning(flagged, icon=":material/warning:")
            confirmed = st.checkbox("The comment holds no patient identifier: save it as written", key=f"cok_{uid}")
        saved = st.button("Save decisions", type="primary", key="save", disabled=not can, help="Save (key s)")
    if not saved:
        return
    comment = comment.strip()
    findings = comment_findings(comment, study_input(results_dir, uid).image_paths) if comment else ()
    if findings and not confirmed:
        st.session_state[f"cflag_{uid}"] = (_digest(comment), describe_findings(findings))  # kinds only, never the text
        st.rerun()
    decisions = []
    for label, (kind, p, t) in choices.items():
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
                comment=comment,
            )
        )
    if not decisions:
        st.warning("Choose agree or disagree for at least one label.")
        return
    try:
        stored = store.record_many(decisions, [m] if (m := pending_measurement(uid)) is not None else [])
    except InputRejected as rejected:
        st.error(f"Not saved: {rejected.reason}.")
        return
    st.session_state.pop(f"cflag_{uid}", None)
    st.session_state.pop(f"ctr_{uid}", None)  # saved with them
    st.session_state["saved_note"] = (uid, f"Saved {len(stored)} decision(s) at {stored[0].decided_at}.")
    st.rerun()  # the labels' "saved" lines and the unsaved markers are drawn from the store again


def _verified_sr_panel(user: User, result: ResultRow, store: ReviewStore, uid: str, settings: ReviewSettings) -> None:
    """Issue a VERIFIED DICOM SR from the saved decisions, when batch scoring wrote the study's SR."""
    from medfusion.review.verified_sr import issue_verified_sr, send_verified_sr, unverified_sr

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


def _leave(uid: str, target: str, store: ReviewStore) -> None:
    """on_click of Previous/Next: go to ``target``; unsaved drafts of ``uid`` stay in the session, with a warning."""
    pending = _unsaved(uid, store)
    if pending:
        st.session_state["left_unsaved"] = (uid, pending)
    st.session_state["study"] = target
    st.query_params[STUDY_PARAM] = target


def _default_queue(results: pd.DataFrame, store: ReviewStore, query: WorklistQuery) -> list[str]:
    """The worklist order under the sidebar's filters (a study opened by link has no queue yet); never empty."""
    try:
        return list(build_worklist(results, store.reviewed_counts(labels_of(results)), query)["study_uid"])
    except ValueError:
        return []


def _keyboard(store: ReviewStore) -> None:
    """Keyboard shortcuts (:data:`SHORTCUTS`) and the unsaved-drafts warning on reload, in the page itself.

    Not the ``streamlit-shortcuts`` package: its 1.2.2 draws with ``st.components.v1.html``, deprecated
    in this Streamlit (a warning per rerun), and fires while the reviewer types a comment.
    """
    keys = {key: button for key, (button, _) in SHORTCUTS.items()}
    unsaved = sum(len(_unsaved(uid, store)) for uid in st.session_state.get("drafts", {}))
    st.html(_KEYS_JS % (json.dumps(keys), unsaved), unsafe_allow_javascript=True)


def _study_page(
    user: User,
    settings: ReviewSettings,
    results: pd.DataFrame,
    labels: list[str],
    store: ReviewStore,
    query: WorklistQuery,
) -> None:
    uid = st.query_params.get(STUDY_PARAM) or st.session_state.get("study")
    if not uid:
        st.info("Open a study from the worklist, or by its link (`/study?study=<StudyInstanceUID>`).")
        return
    if st.query_params.get(STUDY_PARAM) != uid:
        st.query_params[STUDY_PARAM] = uid  # the URL names the study shown (reload, bookmark, share)
    st.session_state["study"] = uid
    matches = results[results["study_uid"] == uid]
    if matches.empty:
        st.error(
            f"Study `{uid}` is not in this scoring output (check the link, or the results folder "
            f"`{settings.results_dir.name}`). Go back to the worklist to choose a study."
        )
        return
    queue = st.session_state.get("queue") or []
    if uid not in queue:
        queue = _default_queue(results, store, query)
        queue = queue if uid in queue else [uid, *queue]
        st.session_state["queue"] = queue
    pos = queue.index(uid)
    left_with = st.session_state.pop("left_unsaved", None)
    if left_with is not None:
        was, pending = left_with
        st.warning(
            f"Study `{was}` has {len(pending)} unsaved decision(s) ({', '.join(pending)}): kept as drafts, "
            "marked unsaved in the worklist. Go back and save them.",
            icon=":material/warning:",
        )
    before, after = neighbour(queue, uid, -1), neighbour(queue, uid, 1)
    nav = st.columns([1, 1, 1, 5], vertical_alignment="center")
    if nav[0].button("← Worklist", key="back"):
        pending = _unsaved(uid, store)
        if pending:
            st.session_state["left_unsaved"] = (uid, pending)
        st.switch_page(_PAGES["worklist"])
    nav[1].button(
        "‹ Previous",
        key="prev",
        disabled=before is None,
        on_click=_leave,
        args=(uid, before, store),
        help="Previous study (key p)",
    )
    nav[2].button(
        "Next ›",
        key="next",
        disabled=after is None,
        on_click=_leave,
        args=(uid, after, store),
        help="Next study (key n)",
    )
    header = f"Study **{pos + 1} / {len(queue)}** &nbsp; `{uid}`"
    if user.may_see_identifiers:  # display only: read now, never logged, cached, exported or audited
        ids = identifiers.read_identifiers(study_input(settings.results_dir, uid).image_paths)
        header += (
            f" &nbsp; Acc. **{ids.accession or '-'}** · {ids.study_date or '-'} · {ids.age or '-'} · {ids.sex or '-'}"
        )
    if _unsaved(uid, store):
        header += " &nbsp; :orange[● unsaved]"
    nav[3].markdown(header)
    if settings.viewer_url_template:
        st.link_button("Open in PACS viewer", str(settings.viewer_url(uid)), icon=":material/open_in_new:")
    _keyboard(store)
    try:
        result = ResultRow.from_record({str(k): v for k, v in matches.iloc[0].items()}, labels)
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
    note = st.session_state.pop("saved_note", None)
    if note is not None and note[0] == uid:
        st.success(note[1])
    _decision_form(user, result, store, shown_maps + shown_tokens, opacity, uid, str(settings.results_dir))
    st.caption("Keys: " + " · ".join(f"**{key}** {meaning}" for key, (_, meaning) in SHORTCUTS.items()))
    _verified_sr_panel(user, result, store, uid, settings)
    history = store.audit(uid)
    if history:
        with st.expander(f"Audit trail ({len(history)} entries)"):
            st.dataframe(_audit_rows(history), hide_index=True, width="stretch")


def _audit_rows(history: list[Any], with_study: bool = False) -> list[dict[str, Any]]:
    """Audit-trail rows, newest first (no patient identifier is ever stored, so none is shown)."""
    return [
        {
            **({"study": r.study_uid} if with_study else {}),
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
    ]


# ------------------------------------------------------------------------------------- audit


def _audit_page(store: ReviewStore) -> None:
    st.title("Audit trail")
    st.caption("Every saved decision, newest first. Append-only: nothing here can be edited or deleted.")
    c1, c2 = st.columns(2)
    who = c1.multiselect("Reviewer", store.reviewers(), key="audit_reviewers")
    study = c2.text_input("Study UID contains", key="audit_study").strip()
    found = store.search(who, study, newest=AUDIT_ROWS)
    st.metric("Entries", found.total)
    if found.newest_first:
        if found.total > len(found.newest_first):
            st.caption(f"The newest {len(found.newest_first)} are listed; narrow the filters for older ones.")
        rows = _audit_rows(list(reversed(found.newest_first)), with_study=True)
        st.dataframe(rows, hide_index=True, width="stretch", key="audit_table")
    measured = store.measurements(newest=AUDIT_ROWS)
    if measured:
        st.subheader("Measurements")
        st.dataframe(
            [
                {
                    "study": m.study_uid,
                    "time (UTC)": m.decided_at,
                    "reviewer": m.reviewer,
                    "kind": m.kind,
                    "ratio": round(m.ratio, 3),
                }
                for m in reversed(measured)
            ],
            hide_index=True,
            width="stretch",
        )


# ------------------------------------------------------------------------------------- admin


def _admin_page(settings: ReviewSettings, results: pd.DataFrame, store: ReviewStore) -> None:
    """Users (no hashes), health and settings (no secrets): the ``admin`` role only."""
    st.title("Admin")
    st.subheader("Health")
    roles, problems = _oidc(settings)
    h1, h2, h3 = st.columns(3)
    h1.metric("Scored studies", len(results))
    h2.metric("Saved decisions", store.search(newest=0).total)
    h3.metric("Explanations cached", len(_explanations()))
    st.markdown(
        f"- Hospital sign-in (OIDC): **{'on' if roles else 'off'}**"
        + (f" ({'; '.join(problems)})" if problems else "")
        + (f", role claim `{roles.claim}`, {len(roles.grants)} mapped value(s)" if roles else "")
    )
    st.subheader("Users")
    try:
        users = read_users(settings.users_path)
    except MedfusionError as err:
        st.error(str(err))
        users = {}
    st.dataframe(
        [
            {
                "user": n,
                "role": e.role,
                "identifiers": e.identifiers,
                "password": e.password_hash is not None,
                "display name": e.display_name or "",
            }
            for n, e in sorted(users.items())
        ],
        hide_index=True,
        width="stretch",
        key="admin_users",
    )
    with st.form("add_user", clear_on_submit=True):
        st.markdown("**Add or replace a local user** (stored as a salted scrypt hash)")
        a1, a2, a3 = st.columns(3)
        name = a1.text_input("User name", key="new_user")
        role = a2.selectbox("Role", ["reviewer", "viewer", "admin"], key="new_role")
        password = a3.text_input("Password", type="password", key="new_password")
        identifiers = st.checkbox("May see identifiers (accession, study date, age, sex)", key="new_identifiers")
        if st.form_submit_button("Save user"):
            try:
                add_user(settings.users_path, name.strip(), password, role, identifiers=identifiers)  # type: ignore[arg-type]
            except InputRejected as err:
                st.error(f"Not saved: {err.reason}.")
            else:
                st.success(f"User '{name.strip()}' ({role}) saved.")
    st.subheader("Settings")
    st.dataframe(
        [
            {"setting": "results", "value": str(settings.results_dir)},
            {"setting": "store", "value": str(settings.store_path)},
            {"setting": "users file", "value": str(settings.users_path)},
            {"setting": "model", "value": settings.model_uri or "(the version that scored)"},
            {"setting": "trusted header", "value": settings.trusted_header or "(off)"},
            {"setting": "PACS viewer link", "value": settings.viewer_url_template or "(none)"},
            {"setting": "verified SRs sent to", "value": settings.stow_url or "(written only)"},
            {"setting": "organization", "value": settings.organization},
        ],
        hide_index=True,
        width="stretch",
    )


# --------------------------------------------------------------------------------------- main

#: The app's pages by name (set by :func:`main` before any page runs; page code switches with them).
_PAGES: dict[str, StreamlitPage] = {}


def _pages(user: User | None, run: Callable[[str], None]) -> list[StreamlitPage]:
    """The pages this user may open (every page before login, so that the URL's page and query survive it)."""
    specs = [
        ("worklist", "Worklist", ":material/list:"),
        ("study", "Study", ":material/radiology:"),
        ("audit", "Audit", ":material/history:"),
    ]
    if user is None or user.is_admin:
        specs.append(("admin", "Admin", ":material/admin_panel_settings:"))
    pages = []
    for name, title, icon in specs:

        def page(name: str = name) -> None:
            run(name)

        page.__name__ = f"page_{name}"
        pages.append(st.Page(page, title=title, icon=icon, url_path=name, default=name == "worklist"))
    _PAGES.clear()
    _PAGES.update(zip((s[0] for s in specs), pages, strict=True))
    return pages


def main() -> None:
    try:
        settings = _settings()
    except MedfusionError as err:
        st.error(str(err))
        return
    user = st.session_state.get("user")
    bodies: dict[str, Callable[[], None]] = {}  # filled once signed in; st.navigation needs the pages first
    page = st.navigation(_pages(user, lambda name: bodies[name]()), position="hidden" if user is None else "sidebar")
    if user is None:
        user = _login(settings)
        if user is None:
            return  # the page and its ?study= stay in the URL: the login's rerun lands on them
        st.rerun()  # signed in by header or OIDC: again, with this user's pages
    results = _scores(str(settings.results_dir))
    labels = labels_of(results)
    store = _store(settings)
    query = _sidebar(user, settings, labels, store)

    def worklist() -> None:
        if STUDY_PARAM in st.query_params:  # an old-style link to the app's root: /?study=<uid>
            st.switch_page(_PAGES["study"], query_params={STUDY_PARAM: st.query_params[STUDY_PARAM]})
        reviewed = store.reviewed_counts(labels)
        listed = build_worklist(results, reviewed, query)
        scored = reviewed[reviewed.index.isin(results["study_uid"])]
        _worklist_page(listed, labels, len(results), scored, query, store, user, settings)

    bodies.update(
        worklist=worklist,
        study=lambda: _study_page(user, settings, results, labels, store, query),
        audit=lambda: _audit_page(store),
        admin=lambda: _admin_page(settings, results, store),
    )
    page.run()


main()
