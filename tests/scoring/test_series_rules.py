"""A model's series rules decide what batch scoring reads: studies no rule matches are dead-lettered
with the rule set's name, the others scored from the image the rules chose."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.models.card import META_FILE
from medfusion.scoring import read_results
from medfusion.scoring.job import ScoreOptions, run_score
from medfusion.scoring.ledger import Ledger
from tests.support.demo import DemoProject
from tests.support.scoring import Cohort


def test_studies_without_a_matching_series_are_dead_lettered_with_the_rule_set(
    demo_project: DemoProject, small_cohort: Cohort, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(demo_project.model_dir, model)
    card = json.loads((model / META_FILE).read_text())
    card["preprocessing"]["series_rules"] = {"name": "lateral-only", "rules": [{"view_position": ["LL", "RL"]}]}
    (model / META_FILE).write_text(json.dumps(card))
    scan = scan_dicom_folder(small_cohort.dicom)
    with_lateral = {uid for uid, s in scan.studies.items() if any(i.view_position == "LL" for i in s.instances)}
    assert 0 < len(with_lateral) < len(scan.studies)  # the demo cohort has some two-view studies

    options = ScoreOptions(
        source=str(small_cohort.dicom), reports=small_cohort.reports, model=str(model), out_dir=tmp_path / "o"
    )
    summary = run_score(options)

    assert set(read_results(tmp_path / "o")["study_uid"]) == with_lateral
    with Ledger(tmp_path / "o") as ledger:
        rows = {r["study_uid"]: r for r in ledger.dead_letters()}
    assert set(rows) == set(scan.studies) - with_lateral and summary.pending == 0
    for row in rows.values():
        assert str(row["reason"]).startswith("no series matched rule set 'lateral-only' (1 instance(s) in 1 series")
