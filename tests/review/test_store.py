"""The review store on both backends (sqlite, PostgreSQL): append-only audit rows, current-decision
view, validation, concurrent saves."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from medfusion.errors import InputRejected
from medfusion.review.store import Decision, Measurement, ReviewStore, Shown
from tests.support.postgres import PostgresServer


@dataclass(frozen=True)
class Backend:
    """A fresh, empty store location and direct access to its database (bypassing the store).

    Attributes:
        name: ``sqlite`` or ``postgresql``.
        location: What :class:`ReviewStore` is given (a path or a URL).
        integrity_error: The driver's exception for a refused write (trigger or constraint).
    """

    name: str
    location: Any
    integrity_error: type[Exception]

    def raw(self) -> Any:
        """An autocommit DB-API connection to the store's database, as any client could open."""
        if self.name == "sqlite":
            return sqlite3.connect(self.location, isolation_level=None)
        import psycopg

        return psycopg.connect(self.location, autocommit=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path / "review.sqlite", sqlite3.IntegrityError)
    import psycopg

    server: PostgresServer = request.getfixturevalue("postgres")
    return Backend("postgresql", server.url(server.create_database()), psycopg.IntegrityError)


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


def test_audit_keeps_every_row_and_current_keeps_the_latest(backend) -> None:
    store = ReviewStore(backend.location)
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


def test_rows_cannot_be_changed_or_deleted(backend) -> None:
    store = ReviewStore(backend.location)
    store.record(_decision())
    with backend.raw() as con:
        with pytest.raises(backend.integrity_error, match="append-only"):
            con.execute("UPDATE decisions SET decision = 'disagree'")
        with pytest.raises(backend.integrity_error, match="append-only"):
            con.execute("DELETE FROM decisions")
        if backend.name == "sqlite":
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        else:  # statement-level triggers: refused even when no row matches, and TRUNCATE too
            with pytest.raises(backend.integrity_error, match="append-only"):
                con.execute("DELETE FROM decisions WHERE id < 0")
            with pytest.raises(backend.integrity_error, match="append-only"):
                con.execute("TRUNCATE decisions")
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
def test_inconsistent_decisions_are_rejected_and_nothing_is_written(backend, kw, reason) -> None:
    store = ReviewStore(backend.location)
    with pytest.raises(InputRejected, match=reason):
        store.record_many([_decision(label="effusion"), _decision(**kw)])
    assert store.audit() == []


def test_reviewed_counts_feed_the_worklist(backend) -> None:
    store = ReviewStore(backend.location)
    assert store.reviewed_counts(["nodule", "effusion"]).empty
    store.record_many([_decision(), _decision(label="effusion", kind="disagree")])
    store.record(_decision(kind="disagree"))  # decided again: still one label
    store.record(_decision(label="fracture"))  # not one of the labels asked about
    store.record(_decision(study_uid="1.2.3.5", label="effusion"))
    store.record(_decision(study_uid="1.2.3.6", label="fracture"))  # no decision on the labels asked about
    counts = store.reviewed_counts(["nodule", "effusion"])
    assert counts.to_dict() == {"1.2.3.4": 2, "1.2.3.5": 1}
    assert counts.dtype == "int64"
    assert store.reviewed_counts(["fracture"]).to_dict() == {"1.2.3.4": 1, "1.2.3.6": 1}
    assert store.reviewed_counts([]).empty


def test_a_measurement_is_saved_with_the_decisions_and_is_append_only(backend) -> None:
    store = ReviewStore(backend.location)
    ctr = Measurement("1.2.3.4", "1.2.3.4.1", cardiac_width=130.0, thoracic_width=260.0, reviewer="alice")
    store.record_many([_decision()], [ctr])
    (row,) = store.measurements("1.2.3.4")
    assert (row.kind, row.sop_instance_uid, row.reviewer) == ("ctr", "1.2.3.4.1", "alice")
    assert row.ratio == pytest.approx(0.5)
    assert row.decided_at == store.audit("1.2.3.4")[0].decided_at  # one transaction, one time
    assert store.measurements("9.9") == []
    with backend.raw() as con:
        with pytest.raises(backend.integrity_error, match="append-only"):
            con.execute("UPDATE measurements SET cardiac_width = 1")
        with pytest.raises(backend.integrity_error, match="append-only"):
            con.execute("DELETE FROM measurements")


@pytest.mark.parametrize(
    ("widths", "reason"),
    [((0.0, 200.0), "positive"), ((210.0, 200.0), "exceeds"), ((-1.0, -2.0), "positive")],
)
def test_an_impossible_measurement_rejects_the_whole_save(backend, widths, reason) -> None:
    store = ReviewStore(backend.location)
    bad = Measurement("1.2.3.4", "1.2.3.4.1", cardiac_width=widths[0], thoracic_width=widths[1], reviewer="alice")
    with pytest.raises(InputRejected, match=reason):
        store.record_many([_decision()], [bad])
    assert store.audit() == [] and store.measurements() == []


def test_reopening_a_store_keeps_its_rows(backend) -> None:
    ReviewStore(backend.location).record(_decision())
    again = ReviewStore(backend.location)  # schema creation is idempotent
    assert [r.decision for r in again.audit()] == ["agree"]


def test_concurrent_saves_on_one_study_keep_every_row_and_the_last_save_wins(backend) -> None:
    """Eight reviewers (each with its own store object, as on separate app servers) save the same
    study's two labels at the same moment."""
    n = 8
    stores = [ReviewStore(backend.location) for _ in range(n)]
    start = threading.Barrier(n)
    saved: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def save(i: int) -> None:
        reviewer = f"reviewer{i}"
        decisions = [
            _decision(kind="agree", reviewer=reviewer),
            _decision(label="effusion", kind="corrected", corrected_value=i % 2 == 0, reviewer=reviewer),
        ]
        ctr = Measurement("1.2.3.4", "1.2.3.4.1", cardiac_width=100.0 + i, thoracic_width=250.0, reviewer=reviewer)
        try:
            start.wait(timeout=30)
            saved[reviewer] = [r.id for r in stores[i].record_many(decisions, [ctr])]
        except BaseException as err:  # noqa: BLE001  (reported below)
            errors.append(err)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(saved) == n

    audit = stores[0].audit("1.2.3.4")
    assert len(audit) == 2 * n
    ids = [r.id for r in audit]
    assert ids == sorted(set(ids))
    # writers are serialised: each save's two rows are consecutive, with one decided_at
    for reviewer, (first, second) in saved.items():
        assert second == first + 1
        rows = [r for r in audit if r.reviewer == reviewer]
        assert [r.id for r in rows] == [first, second] and rows[0].decided_at == rows[1].decided_at
    # ids follow commit order, and so does the time taken under the write lock
    assert [r.decided_at for r in audit] == sorted(r.decided_at for r in audit)
    last = max(saved, key=lambda reviewer: saved[reviewer][0])
    current = {r.label: r for r in stores[0].current("1.2.3.4")}
    assert {label: r.reviewer for label, r in current.items()} == {"nodule": last, "effusion": last}
    assert [r.id for r in current.values()] == sorted(saved[last])
    measured = stores[0].measurements("1.2.3.4")
    assert sorted(m.reviewer for m in measured) == sorted(saved)
    assert {m.reviewer: m.decided_at for m in measured} == {r.reviewer: r.decided_at for r in audit}


def test_the_audit_search_filters_counts_and_limits_in_the_database(backend) -> None:
    store = ReviewStore(backend.location)
    for i in range(12):
        store.record(_decision(study_uid=f"1.2.{i}", reviewer=("alice", "bob", "carol")[i % 3]))
    everything = store.search()
    assert everything.total == 12
    assert [r.study_uid for r in everything.newest_first] == [f"1.2.{i}" for i in reversed(range(12))]
    page = store.search(["alice", "carol"], newest=3)
    assert page.total == 8  # i % 3 in (0, 2)
    assert [r.study_uid for r in page.newest_first] == ["1.2.11", "1.2.9", "1.2.8"]
    assert store.search(study_contains="1.2.1").total == 3  # 1.2.1, 1.2.10, 1.2.11
    assert store.search(["bob"], "1.2.1").total == 2  # 1.2.1, 1.2.10
    # LIKE's wildcards are literal characters here: no UID contains them
    assert store.search(study_contains="_").total == 0
    assert store.search(study_contains="%").total == 0
    assert store.search(study_contains="1_2").total == 0
    counted = store.search(newest=0)
    assert (counted.total, counted.newest_first) == (12, [])
    assert store.reviewers() == ["alice", "bob", "carol"]


def test_the_newest_measurements_come_from_the_database_oldest_first(backend) -> None:
    store = ReviewStore(backend.location)
    for i in range(5):
        ctr = Measurement(f"1.2.{i}", f"1.2.{i}.1", cardiac_width=100.0 + i, thoracic_width=260.0, reviewer="alice")
        store.record_many([_decision(study_uid=f"1.2.{i}")], [ctr])
    assert [m.study_uid for m in store.measurements(newest=2)] == ["1.2.3", "1.2.4"]
    assert [m.study_uid for m in store.measurements()] == [f"1.2.{i}" for i in range(5)]
    assert [m.study_uid for m in store.measurements("1.2.1", newest=10)] == ["1.2.1"]
    assert store.measurements(newest=0) == []
