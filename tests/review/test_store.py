"""The review store: append-only audit rows, current-decision view, validation."""

from __future__ import annotations

import sqlite3

import pytest

from medfusion.errors import InputRejected
from medfusion.review.store import Decision, Measurement, ReviewStore, Shown


def _decision(label: str = "nodule", kind: str = "agree", **kw) -> Decision:
    base = {
        "study_uid": "1.2.3.4",
        "label": label,
        "decision": kind,
        "reviewer": "alice",
        "model_name": "medfusion",
        "model_version": "7",
        "shown": Shown(0.81, 0.5, ("gradcam", "attention"), 0.35),
    }
    base.update(kw)
    return Decision(**base)


def test_audit_keeps_every_row_and_current_keeps_the_latest(tmp_path) -> None:
    store = ReviewStore(tmp_path / "review.sqlite")
    store.record(_decision(kind="agree"))
    store.record(_decision(kind="corrected", corrected_value=False, comment="calcified granuloma, not a nodule"))
    store.record(_decision(label="effusion", kind="disagree", shown=Shown(0.2, 0.4)))

    audit = store.audit("1.2.3.4")
    assert [r.decision for r in audit] == ["agree", "corrected", "disagree"]
    current = {r.label: r for r in store.current("1.2.3.4")}
    assert set(current) == {"nodule", "effusion"}
    assert current["nodule"].decision == "corrected" and current["nodule"].reviewed_value is False
    # disagreeing with a negative model decision (0.2 < 0.4) means the finding is present
    assert current["effusion"].reviewed_value is True
    row = audit[0]
    assert (row.reviewer, row.model_name, row.model_version) == ("alice", "medfusion", "7")
    assert row.shown == Shown(0.81, 0.5, ("gradcam", "attention"), 0.35)
    assert row.decided_at.endswith("+00:00")


def test_rows_cannot_be_changed_or_deleted(tmp_path) -> None:
    store = ReviewStore(tmp_path / "review.sqlite")
    store.record(_decision())
    con = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("UPDATE decisions SET decision = 'disagree'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM decisions")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 1


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"kind": "corrected"}, "corrected value is required"),
        ({"kind": "agree", "corrected_value": True}, "corrected value is required"),
        ({"kind": "maybe"}, "decision must be one of"),
        ({"reviewer": " "}, "reviewer is empty"),
        ({"shown": Shown(1.5, 0.5)}, "outside"),
        ({"shown": Shown(0.5, 0.5, (), 2.0)}, "opacity"),
    ],
)
def test_inconsistent_decisions_are_rejected_and_nothing_is_written(tmp_path, kw, reason) -> None:
    store = ReviewStore(tmp_path / "review.sqlite")
    with pytest.raises(InputRejected, match=reason):
        store.record_many([_decision(label="effusion"), _decision(**kw)])
    assert store.audit() == []


def test_current_frame_feeds_the_worklist(tmp_path) -> None:
    store = ReviewStore(tmp_path / "review.sqlite")
    store.record_many([_decision(), _decision(label="effusion", kind="disagree")])
    frame = store.current_frame()
    assert sorted(frame["label"]) == ["effusion", "nodule"]
    assert dict(zip(frame["label"], frame["reviewed_value"], strict=True)) == {"nodule": True, "effusion": False}


def test_a_measurement_is_saved_with_the_decisions_and_is_append_only(tmp_path) -> None:
    store = ReviewStore(tmp_path / "review.sqlite")
    ctr = Measurement("1.2.3.4", "1.2.3.4.1", cardiac_width=130.0, thoracic_width=260.0, reviewer="alice")
    store.record_many([_decision()], [ctr])
    (row,) = store.measurements("1.2.3.4")
    assert (row.kind, row.sop_instance_uid, row.reviewer) == ("ctr", "1.2.3.4.1", "alice")
    assert row.ratio == pytest.approx(0.5)
    assert row.decided_at == store.audit("1.2.3.4")[0].decided_at  # one transaction, one time
    assert store.measurements("9.9") == []
    con = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("UPDATE measurements SET cardiac_width = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM measurements")


@pytest.mark.parametrize(
    ("widths", "reason"),
    [((0.0, 200.0), "positive"), ((210.0, 200.0), "exceeds"), ((-1.0, -2.0), "positive")],
)
def test_an_impossible_measurement_rejects_the_whole_save(tmp_path, widths, reason) -> None:
    store = ReviewStore(tmp_path / "review.sqlite")
    bad = Measurement("1.2.3.4", "1.2.3.4.1", cardiac_width=widths[0], thoracic_width=widths[1], reviewer="alice")
    with pytest.raises(InputRejected, match=reason):
        store.record_many([_decision()], [bad])
    assert store.audit() == [] and store.measurements() == []
