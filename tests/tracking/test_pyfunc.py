"""The registered pyfunc's output is the result schema, with the same provenance as batch scoring."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from medfusion.ingest.manifest import read_manifest
from medfusion.results import STATUS, decide, result_columns
from medfusion.scoring.resolve import resolve_model
from medfusion.tracking.store import use_store
from tests.conftest import DemoProject


def test_pyfunc_rows_carry_the_result_schema_and_provenance(demo_project: DemoProject) -> None:
    use_store(demo_project.tracking_uri)
    champion = mlflow.MlflowClient(demo_project.tracking_uri).get_model_version_by_alias("medfusion", "champion")
    folder = resolve_model(str(demo_project.model_dir))
    studies = read_manifest(demo_project.manifest_path).head(2)
    rows = pd.DataFrame(
        {
            "image_paths": [list(p) for p in studies["image_paths"]] + [[]],
            "report_text": [*studies["report_text"], ""],
            "fhir_report": ["", "", '{"resourceType": "DiagnosticReport"}'],  # the last one is not a valid report
        }
    )
    out = mlflow.pyfunc.load_model(demo_project.model_uri).predict(rows)
    labels = demo_project.config.labels
    assert list(out.columns) == [name for name, _ in result_columns(labels, study_uid=False, error=True)]
    assert set(out["model_name"]) == {"medfusion"} and set(out["model_version"]) == {str(champion.version)}
    assert set(out["model_id"]) == {folder.model_id} and set(out["status"]) == {STATUS}
    probs = out[[f"prob_{label}" for label in labels]].to_numpy(dtype=float)  # (3, L)
    thresholds = out[[f"threshold_{label}" for label in labels]].to_numpy(dtype=float)  # (3, L), failed row too
    assert np.all((thresholds > 0) & (thresholds < 1)) and (thresholds == thresholds[0]).all()
    np.testing.assert_array_equal(out[[f"decision_{label}" for label in labels]].to_numpy(), decide(probs, thresholds))
    assert list(out["error"][:2]) == ["", ""] and np.isfinite(probs[:2]).all()
    assert "DiagnosticReport" in out["error"][2] and np.isnan(probs[2]).all()
