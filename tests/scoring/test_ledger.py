"""Ledger: pending -> done in one commit per part; orphan parts are deleted at start-up; no double commit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from medfusion.errors import MedfusionError
from medfusion.scoring.job import ScoreSummary
from medfusion.scoring.ledger import DONE, FAILED, PENDING, Ledger
from medfusion.scoring.sources import StudyRef

from .cli_process import parse_dead_letter_table


def _refs(n: int) -> list[StudyRef]:
    return [StudyRef(f"1.2.{i}", (f"/a/{i}.dcm",), None) for i in range(n)]


def test_orphan_part_is_deleted_and_its_studies_stay_pending(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    with Ledger(tmp_path) as ledger:
        assert ledger.add_studies(_refs(5)) == 5
        (results / "part-000000.parquet").write_bytes(b"committed")
        ledger.commit_part("part-000000", ["1.2.0", "1.2.1"])
        (results / "part-000001.parquet").write_bytes(b"renamed, never committed")  # killed here
        (results / ".part-000002.parquet.tmp").write_bytes(b"half written")
    with Ledger(tmp_path) as ledger:  # the next run
        deleted = ledger.reconcile([results, tmp_path / "fhir"])
        assert sorted(p.name for p in deleted) == [
            ".part-000002.parquet.tmp",
            "part-000001.parquet",
        ]
        assert [p.name for p in results.iterdir()] == ["part-000000.parquet"]
        assert [r.study_uid for r in ledger.iter_pending()] == [
            "1.2.2",
            "1.2.3",
            "1.2.4",
        ]
        assert ledger.add_studies(_refs(6)) == 6  # re-discovery keeps done studies done
        assert (ledger.count(DONE), ledger.count(PENDING)) == (2, 4)
        with pytest.raises(MedfusionError, match="not pending"):
            ledger.commit_part("part-000003", ["1.2.5", "1.2.0"])
        assert ledger.count(DONE) == 2 and ledger.get("1.2.5")[1] == PENDING  # the whole commit rolled back
        ledger.fail("1.2.5", "/a/5.dcm", "truncated pixel data", "decode")
        assert ledger.get("1.2.5")[1] == FAILED and ledger.rejected_by_reason() == {"truncated pixel data": 1}


def test_another_model_is_refused(tmp_path: Path) -> None:
    with Ledger(tmp_path) as ledger:
        ledger.bind_job(
            {"model_name": "m", "model_version": "1", "source": "/a"},
            identity=("model_name", "model_version"),
        )
        ledger.bind_job(
            {"model_name": "m", "model_version": "1", "source": "/a"},
            identity=("model_name", "model_version"),
        )
        with pytest.raises(MedfusionError, match=r"model_version=1.*model_version=2"):
            ledger.bind_job(
                {"model_name": "m", "model_version": "2"},
                identity=("model_name", "model_version"),
            )


def test_dead_letters_by_stage_and_reason_print_as_one_table(tmp_path: Path) -> None:
    with Ledger(tmp_path) as ledger:
        ledger.add_studies(_refs(3))
        ledger.dead_letter_file("/a/x.txt", "not a DICOM file", "discover")
        ledger.dead_letter_file("/r.ndjson:line 4", "malformed JSON: Expecting value (column 1)", "reports")
        ledger.fail("1.2.0", "/a/0.dcm", "no pixel data", "decode")
        ledger.dead_letter_file("/a/z", "empty file", "discover")
        ledger.dead_letter_file("/a/y.txt", "not a DICOM file", "discover")
        ledger.dead_letter_file("/a/y.txt", "not a DICOM file", "discover")  # a re-run: recorded once
        ledger.fail("1.2.1", "/a/1.dcm", "no pixel data", "decode")
        ledger.fail("1.2.2", None, "worker process died 2 times", "worker-crash")
        table = ledger.rejected_by_stage()
        assert len(ledger.dead_letters(stage="discover")) == 3 and len(ledger.dead_letters(limit=2)) == 2
    assert table == {
        "discover": {"not a DICOM file": 2, "empty file": 1},
        "reports": {"malformed JSON: Expecting value (column 1)": 1},
        "decode": {"no pixel data": 2},
        "worker-crash": {"worker process died 2 times": 1},
    }
    assert list(table) == ["discover", "reports", "decode", "worker-crash"]  # stages in order of first appearance
    assert list(table["discover"]) == ["not a DICOM file", "empty file"]  # reasons: most first
    summary = ScoreSummary(
        model={"name": "m", "version": "1", "id": "m-0", "uri": "models:/m/1"},
        engine="local",
        discovered=3,
        scored=0,
        scored_this_run=0,
        failed=3,
        pending=0,
        rejected_files=3,
        dead_letters=table,
    )
    assert parse_dead_letter_table(summary.text()) == (table, 7)
    assert "dead letters: none" in replace(summary, dead_letters={}).text()


def test_orphan_sr_folders_are_deleted_and_committed_ones_kept(tmp_path: Path) -> None:
    sr = tmp_path / "sr"
    for name in ("part-000000", "part-000001", ".part-000002.tmp"):
        (sr / name).mkdir(parents=True)
        (sr / name / "1.2.3.dcm").write_bytes(b"an SR")
    with Ledger(tmp_path) as ledger:
        ledger.add_studies(_refs(3))
        ledger.commit_part("part-000000", ["1.2.0"])
        deleted = ledger.reconcile([sr])
    assert sorted(p.name for p in deleted) == [".part-000002.tmp", "part-000001"]
    assert [p.name for p in sr.iterdir()] == ["part-000000"]
    assert (sr / "part-000000" / "1.2.3.dcm").read_bytes() == b"an SR"


def test_unsent_srs_are_the_committed_ones_not_recorded_as_sent(tmp_path: Path) -> None:
    with Ledger(tmp_path) as ledger:
        ledger.add_studies(_refs(4))
        ledger.commit_part("part-000000", ["1.2.0", "1.2.1", "1.2.2"])  # 1.2.3 still pending
        assert ledger.unsent() == [("1.2.0", "part-000000"), ("1.2.1", "part-000000"), ("1.2.2", "part-000000")]
        ledger.record_sent("1.2.0", ok=True)
        ledger.record_sent("1.2.1", ok=False, reason="HTTP 503")
        assert ledger.unsent() == [("1.2.1", "part-000000"), ("1.2.2", "part-000000")]  # killed before 1.2.2
        ledger.record_sent("1.2.1", ok=True)
        assert (ledger.count_sent("sent"), ledger.count_sent("failed")) == (2, 0)
        attempts = ledger.db.execute("SELECT attempts FROM sr_sent WHERE study_uid = '1.2.1'").fetchone()[0]
        assert attempts == 2
