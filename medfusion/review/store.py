"""The review store: reviewers' per-label decisions, as an append-only audit trail.

Every saved decision is one new row of ``decisions`` (updates and deletes are refused by triggers);
the view ``current_decisions`` keeps the latest row per ``(study_uid, label)``. A row records who
decided what, when (UTC), on which model (name, version) and what the reviewer was shown (the
probability, the threshold, the explanation methods on screen, the heatmap opacity).

The store holds study UIDs (the scoring output's join key) and reviewer login names; never patient
names, IDs or dates.

Decisions, per label:

- ``agree``: the model's decision (``probability >= threshold``) is right.
- ``disagree``: the model's decision is wrong; the reviewed value is its negation.
- ``corrected``: the reviewer states the value explicitly (``corrected_value`` 1 or 0).

Measurements (``measurements``, append-only too) are saved in the same transaction as the decisions
they go with: today the cardiothoracic ratio (``ctr``), two horizontal widths in image pixels.

The rows live in an embedded sqlite file (the default) or in a PostgreSQL database shared by several
app servers (a ``postgresql://`` URL); :mod:`medfusion.review.store_backends` keeps the two alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from medfusion.errors import InputRejected
from medfusion.results import decide
from medfusion.review.store_backends import SqliteBackend, open_backend

DecisionKind = Literal["agree", "disagree", "corrected"]
DECISIONS: tuple[DecisionKind, ...] = ("agree", "disagree", "corrected")


@dataclass(frozen=True)
class Shown:
    """What the reviewer saw when deciding one label.

    Attributes:
        probability: The model's calibrated probability for the label.
        threshold: The label's decision threshold.
        methods: Explanation methods on screen (e.g. ``("gradcam", "attention")``).
        heatmap_opacity: Heatmap overlay opacity in [0, 1], None when no heatmap was shown.
    """

    probability: float
    threshold: float
    methods: tuple[str, ...] = ()
    heatmap_opacity: float | None = None

    @property
    def model_decision(self) -> bool:
        """The model's decision shown (:func:`medfusion.results.decide`: ``probability >= threshold``)."""
        return bool(decide(self.probability, self.threshold))


@dataclass(frozen=True)
class Decision:
    """One reviewer decision on one label of one study.

    Attributes:
        study_uid: StudyInstanceUID (as in the scoring output).
        label: Label name.
        decision: ``agree`` | ``disagree`` | ``corrected``.
        reviewer: Login name of the reviewer.
        model_name: Registered model name that produced the score.
        model_version: Its version.
        shown: What was on screen.
        corrected_value: The stated value (``corrected`` only).
        comment: Free text (must not contain patient identifiers).
    """

    study_uid: str
    label: str
    decision: DecisionKind
    reviewer: str
    model_name: str
    model_version: str
    shown: Shown
    corrected_value: bool | None = None
    comment: str = ""

    @property
    def reviewed_value(self) -> bool:
        """The label's value according to the reviewer."""
        if self.decision == "agree":
            return self.shown.model_decision
        if self.decision == "disagree":
            return not self.shown.model_decision
        return bool(self.corrected_value)


@dataclass(frozen=True)
class DecisionRecord(Decision):
    """A stored :class:`Decision` with its row id and UTC time (ISO 8601)."""

    id: int = 0
    decided_at: str = field(default="")


@dataclass(frozen=True)
class AuditPage:
    """One page of the audit trail (:meth:`ReviewStore.search`).

    Attributes:
        total: Decisions matching the filters.
        newest_first: The latest of them, newest first (at most the limit asked for).
    """

    total: int
    newest_first: list[DecisionRecord]


MeasurementKind = Literal["ctr"]


@dataclass(frozen=True)
class Measurement:
    """A reviewer's measurement on one image of a study, saved with the study's decisions.

    Attributes:
        study_uid: StudyInstanceUID.
        sop_instance_uid: The instance measured (SOPInstanceUID).
        cardiac_width: Widest horizontal extent of the heart, in image pixels (> 0).
        thoracic_width: Widest internal horizontal extent of the thorax, in image pixels (> 0).
        reviewer: Login name of the reviewer.
        kind: ``ctr`` (cardiothoracic ratio; the only kind so far).
    """

    study_uid: str
    sop_instance_uid: str
    cardiac_width: float
    thoracic_width: float
    reviewer: str
    kind: MeasurementKind = "ctr"

    @property
    def ratio(self) -> float:
        """The cardiothoracic ratio ``cardiac_width / thoracic_width``."""
        return self.cardiac_width / self.thoracic_width


@dataclass(frozen=True)
class MeasurementRecord(Measurement):
    """A stored :class:`Measurement` with its row id and UTC time (ISO 8601)."""

    id: int = 0
    decided_at: str = field(default="")


def _validate_measurement(m: Measurement) -> None:
    where = f"measurement on {m.study_uid}"
    if m.kind != "ctr":
        raise InputRejected(where, f"measurement kind must be 'ctr', got {m.kind!r}")
    if not (m.cardiac_width > 0 and m.thoracic_width > 0):
        raise InputRejected(where, "both widths must be positive")
    if m.cardiac_width > m.thoracic_width:
        raise InputRejected(where, "the cardiac width exceeds the thoracic width")
    if not m.reviewer.strip():
        raise InputRejected(where, "reviewer is empty")


def _validate(decision: Decision) -> None:
    where = f"decision on {decision.study_uid}/{decision.label}"
    if decision.decision not in DECISIONS:
        raise InputRejected(where, f"decision must be one of {', '.join(DECISIONS)}, got {decision.decision!r}")
    if (decision.decision == "corrected") != (decision.corrected_value is not None):
        raise InputRejected(where, "a corrected value is required for 'corrected' and only for it")
    if not decision.reviewer.strip():
        raise InputRejected(where, "reviewer is empty")
    if not 0.0 <= decision.shown.probability <= 1.0:
        raise InputRejected(where, f"shown probability {decision.shown.probability} is outside [0, 1]")
    opacity = decision.shown.heatmap_opacity
    if opacity is not None and not 0.0 <= opacity <= 1.0:
        raise InputRejected(where, f"heatmap opacity {opacity} is outside [0, 1]")


class ReviewStore:
    """The review store, embedded (sqlite, WAL) or shared by several app servers (PostgreSQL).

    Safe to open from several processes and threads; each call uses its own connection.

    Args:
        location: A sqlite file (created with its folder when missing), or a ``postgresql://`` URL
            (credentials from the URL or libpq's environment such as ``PGPASSWORD``; see
            :mod:`medfusion.review.store_backends`).

    Raises:
        medfusion.review.store_backends.StoreUnavailable: A PostgreSQL store cannot be reached, or
            psycopg is not installed.
    """

    def __init__(self, location: str | Path) -> None:
        self._backend = open_backend(location)
        #: The sqlite file, or None for a PostgreSQL store.
        self.path: Path | None = self._backend.path if isinstance(self._backend, SqliteBackend) else None

    @property
    def location(self) -> str:
        """Where the rows are, fit for messages (a URL without its password)."""
        return self._backend.label

    def __repr__(self) -> str:
        return f"ReviewStore({self.location!r})"

    def record(self, decision: Decision) -> DecisionRecord:
        """Append one decision; returns it as stored.

        Raises:
            InputRejected: The decision is inconsistent (unknown kind, missing corrected value, ...).
        """
        return self.record_many([decision])[0]

    def record_many(
        self, decisions: Sequence[Decision], measurements: Sequence[Measurement] = ()
    ) -> list[DecisionRecord]:
        """Append several decisions, and the measurements that go with them, in one transaction.

        Writers are serialised, so the rows of one call get consecutive ids, later than those of
        every save committed before, and ``decided_at`` (taken once the write lock is held) follows
        the ids.

        Args:
            decisions: A study's labels saved together.
            measurements: Measurements saved with them (e.g. the cardiothoracic ratio).

        Returns:
            The decisions as stored.
        """
        for d in decisions:
            _validate(d)
        for m in measurements:
            _validate_measurement(m)
        stored = []
        with self._backend.session(write=True) as db:
            at = datetime.now(UTC).isoformat(timespec="milliseconds")
            for d in decisions:
                (row,) = db.execute(
                    "INSERT INTO decisions (study_uid, label, decision, corrected_value, comment, reviewer,"
                    " decided_at, model_name, model_version, shown_probability, shown_threshold, shown_methods,"
                    " shown_opacity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (
                        d.study_uid,
                        d.label,
                        d.decision,
                        None if d.corrected_value is None else int(d.corrected_value),
                        d.comment,
                        d.reviewer,
                        at,
                        d.model_name,
                        d.model_version,
                        float(d.shown.probability),
                        float(d.shown.threshold),
                        json.dumps(list(d.shown.methods)),
                        None if d.shown.heatmap_opacity is None else float(d.shown.heatmap_opacity),
                    ),
                )
                stored.append(_stored(d, int(row["id"]), at))
            for m in measurements:
                db.execute(
                    "INSERT INTO measurements (study_uid, kind, sop_instance_uid, cardiac_width, thoracic_width,"
                    " reviewer, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        m.study_uid,
                        m.kind,
                        m.sop_instance_uid,
                        float(m.cardiac_width),
                        float(m.thoracic_width),
                        m.reviewer,
                        at,
                    ),
                )
        return stored

    def audit(self, study_uid: str | None = None) -> list[DecisionRecord]:
        """Every stored decision (oldest first), optionally of one study."""
        return [_record(row) for row in self._select("decisions", study_uid)]

    def current(self, study_uid: str | None = None) -> list[DecisionRecord]:
        """The latest decision per ``(study_uid, label)``, optionally of one study."""
        return [_record(row) for row in self._select("current_decisions", study_uid)]

    def measurements(self, study_uid: str | None = None, newest: int | None = None) -> list[MeasurementRecord]:
        """Every stored measurement (oldest first), optionally of one study; only the ``newest`` latest
        when given (the limit runs in the database)."""
        return [
            MeasurementRecord(
                study_uid=r["study_uid"],
                sop_instance_uid=r["sop_instance_uid"],
                cardiac_width=r["cardiac_width"],
                thoracic_width=r["thoracic_width"],
                reviewer=r["reviewer"],
                kind=r["kind"],
                id=r["id"],
                decided_at=r["decided_at"],
            )
            for r in self._select("measurements", study_uid, newest)
        ]

    def reviewed_counts(self, labels: Sequence[str]) -> pd.Series:
        """How many of ``labels`` each study has a current decision on (the worklist's review state).

        Counted by the database over its ``(study_uid, label, id)`` index, one row per study out: the
        app asks on every click, so no decision row is read into Python.

        Returns:
            Counts (int) indexed by ``study_uid``; studies without a decision on ``labels`` are absent.
        """
        rows: list[Mapping[str, Any]] = []
        if labels:
            marks = ", ".join("?" for _ in labels)
            with self._backend.session(write=False) as db:
                rows = db.execute(
                    "SELECT study_uid, COUNT(DISTINCT label) AS n FROM decisions"
                    f" WHERE label IN ({marks}) GROUP BY study_uid",  # one '?' per label, values bound
                    tuple(labels),
                )
        counts = pd.Series({r["study_uid"]: int(r["n"]) for r in rows}, dtype="int64")
        counts.index.name = "study_uid"
        return counts

    def search(self, reviewers: Sequence[str] = (), study_contains: str = "", newest: int = 500) -> AuditPage:
        """Decisions of any of ``reviewers`` (all when empty) on studies whose UID contains
        ``study_contains``: how many, and the ``newest`` latest of them.

        The filters and the limit run in the database, so the audit page costs the same whatever the
        store's size.
        """
        where: list[str] = ["1 = 1"]
        args: list[object] = []
        if reviewers:
            where.append(f"reviewer IN ({', '.join('?' for _ in reviewers)})")
            args.extend(reviewers)
        if study_contains:
            escaped = study_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("study_uid LIKE ? ESCAPE '\\'")
            args.append(f"%{escaped}%")
        condition = " AND ".join(where)
        with self._backend.session(write=False) as db:
            (count,) = db.execute(f"SELECT COUNT(*) AS n FROM decisions WHERE {condition}", tuple(args))
            rows = db.execute(
                f"SELECT * FROM decisions WHERE {condition} ORDER BY id DESC LIMIT ?", (*args, max(newest, 0))
            )
        return AuditPage(total=int(count["n"]), newest_first=[_record(row) for row in rows])

    def reviewers(self) -> list[str]:
        """Everyone who has saved a decision, sorted."""
        with self._backend.session(write=False) as db:
            return sorted(r["reviewer"] for r in db.execute("SELECT DISTINCT reviewer FROM decisions"))

    def _select(self, table: str, study_uid: str | None, newest: int | None = None) -> list[Mapping[str, Any]]:
        """Rows of ``table`` (one of three constants), oldest first; the ``newest`` latest when given."""
        query = f"SELECT * FROM {table}"
        args: list[object] = []
        if study_uid is not None:
            query += " WHERE study_uid = ?"
            args.append(study_uid)
        with self._backend.session(write=False) as db:
            if newest is None:
                return db.execute(query + " ORDER BY id", tuple(args))
            return db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, max(newest, 0)))[::-1]


def _stored(d: Decision, row_id: int, decided_at: str) -> DecisionRecord:
    """``d`` as stored: its fields plus the row id and the UTC time."""
    return DecisionRecord(
        study_uid=d.study_uid,
        label=d.label,
        decision=d.decision,
        reviewer=d.reviewer,
        model_name=d.model_name,
        model_version=d.model_version,
        shown=d.shown,
        corrected_value=d.corrected_value,
        comment=d.comment,
        id=row_id,
        decided_at=decided_at,
    )


def _record(row: Mapping[str, Any]) -> DecisionRecord:
    shown = Shown(
        probability=row["shown_probability"],
        threshold=row["shown_threshold"],
        methods=tuple(json.loads(row["shown_methods"])),
        heatmap_opacity=row["shown_opacity"],
    )
    value = row["corrected_value"]
    return DecisionRecord(
        study_uid=row["study_uid"],
        label=row["label"],
        decision=row["decision"],
        reviewer=row["reviewer"],
        model_name=row["model_name"],
        model_version=row["model_version"],
        shown=shown,
        corrected_value=None if value is None else bool(value),
        comment=row["comment"],
        id=row["id"],
        decided_at=row["decided_at"],
    )
