"""The review store: reviewers' per-label decisions in sqlite, as an append-only audit trail.

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
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd

from medfusion.errors import InputRejected
from medfusion.results import decide

DecisionKind = Literal["agree", "disagree", "corrected"]
DECISIONS: tuple[DecisionKind, ...] = ("agree", "disagree", "corrected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    label TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('agree', 'disagree', 'corrected')),
    corrected_value INTEGER CHECK (corrected_value IN (0, 1)),
    comment TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    shown_probability REAL NOT NULL,
    shown_threshold REAL NOT NULL,
    shown_methods TEXT NOT NULL,
    shown_opacity REAL,
    CHECK ((decision = 'corrected') = (corrected_value IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS decisions_by_study ON decisions (study_uid, label, id);
CREATE TRIGGER IF NOT EXISTS decisions_append_only_update BEFORE UPDATE ON decisions
BEGIN SELECT RAISE(ABORT, 'review decisions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS decisions_append_only_delete BEFORE DELETE ON decisions
BEGIN SELECT RAISE(ABORT, 'review decisions are append-only'); END;
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('ctr')),
    sop_instance_uid TEXT NOT NULL,
    cardiac_width REAL NOT NULL CHECK (cardiac_width > 0),
    thoracic_width REAL NOT NULL CHECK (thoracic_width > 0),
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_by_study ON measurements (study_uid, id);
CREATE TRIGGER IF NOT EXISTS measurements_append_only_update BEFORE UPDATE ON measurements
BEGIN SELECT RAISE(ABORT, 'review measurements are append-only'); END;
CREATE TRIGGER IF NOT EXISTS measurements_append_only_delete BEFORE DELETE ON measurements
BEGIN SELECT RAISE(ABORT, 'review measurements are append-only'); END;
CREATE VIEW IF NOT EXISTS current_decisions AS
    SELECT d.* FROM decisions d
    WHERE d.id = (SELECT MAX(e.id) FROM decisions e WHERE e.study_uid = d.study_uid AND e.label = d.label);
"""


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
    """A sqlite (WAL) review store; safe to open from several processes.

    Args:
        path: The sqlite file (created with its folder when missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        return con

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
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        stored = []
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                for d in decisions:
                    cur = con.execute(
                        "INSERT INTO decisions (study_uid, label, decision, corrected_value, comment, reviewer,"
                        " decided_at, model_name, model_version, shown_probability, shown_threshold, shown_methods,"
                        " shown_opacity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                            d.shown.heatmap_opacity,
                        ),
                    )
                    stored.append(_stored(d, int(cur.lastrowid or 0), at))
                for m in measurements:
                    con.execute(
                        "INSERT INTO measurements (study_uid, kind, sop_instance_uid, cardiac_width, thoracic_width,"
                        " reviewer, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (m.study_uid, m.kind, m.sop_instance_uid, m.cardiac_width, m.thoracic_width, m.reviewer, at),
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return stored

    def audit(self, study_uid: str | None = None) -> list[DecisionRecord]:
        """Every stored decision (oldest first), optionally of one study."""
        return list(self._rows("decisions", study_uid))

    def current(self, study_uid: str | None = None) -> list[DecisionRecord]:
        """The latest decision per ``(study_uid, label)``, optionally of one study."""
        return list(self._rows("current_decisions", study_uid))

    def measurements(self, study_uid: str | None = None) -> list[MeasurementRecord]:
        """Every stored measurement (oldest first), optionally of one study."""
        query = "SELECT * FROM measurements"
        args: tuple[str, ...] = ()
        if study_uid is not None:
            query += " WHERE study_uid = ?"
            args = (study_uid,)
        with closing(self._connect()) as con:
            rows = con.execute(query + " ORDER BY id", args).fetchall()
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
            for r in rows
        ]

    def current_frame(self) -> pd.DataFrame:
        """Current decisions as a table: one row per ``(study_uid, label)`` with ``reviewed_value``."""
        records = self.current()
        columns = ["study_uid", "label", "decision", "reviewed_value", "reviewer", "decided_at"]
        return pd.DataFrame(
            [[r.study_uid, r.label, r.decision, r.reviewed_value, r.reviewer, r.decided_at] for r in records],
            columns=columns,
        )

    def _rows(self, table: str, study_uid: str | None) -> Iterator[DecisionRecord]:
        query = f"SELECT * FROM {table}"  # table is one of two constants
        args: tuple[str, ...] = ()
        if study_uid is not None:
            query += " WHERE study_uid = ?"
            args = (study_uid,)
        with closing(self._connect()) as con:
            rows = con.execute(query + " ORDER BY id", args).fetchall()
        for row in rows:
            yield _record(row)


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


def _record(row: sqlite3.Row) -> DecisionRecord:
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
