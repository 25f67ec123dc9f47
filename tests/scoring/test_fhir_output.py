"""--fhir: every line validates with fhir.resources; provenance and the 'not verified' marker; no PHI."""

from __future__ import annotations

import json

from fhir.resources.diagnosticreport import DiagnosticReport
from fhir.resources.observation import Observation

from medfusion.scoring import read_results
from tests.support.scoring import ScoredJob


def test_fhir_output_validates_and_is_marked_unverified(scored_demo: ScoredJob) -> None:
    results = read_results(scored_demo.out).set_index("study_uid")
    lines = [
        line
        for path in sorted((scored_demo.out / "fhir").glob("part-*.ndjson"))
        for line in path.read_text().splitlines()
    ]
    parsed = [json.loads(line) for line in lines]
    reports = [DiagnosticReport.model_validate(p) for p in parsed if p["resourceType"] == "DiagnosticReport"]
    observations = {
        o.id: o for o in (Observation.model_validate(p) for p in parsed if p["resourceType"] == "Observation")
    }
    assert len(reports) == len(results) and len(observations) == 5 * len(results)
    for report in reports:
        assert report.status == "preliminary"
        assert {t.code for t in report.meta.tag} >= {"UNVERIFIED", "medfusion/1"}
        assert "NOT VERIFIED BY A CLINICIAN" in report.note[0].text and "medfusion version 1" in report.note[0].text
        uid = report.study[0].identifier.value.removeprefix("urn:oid:")
        for ref in report.result:
            obs = observations[ref.reference.removeprefix("Observation/")]
            label = obs.code.coding[0].code
            assert abs(float(obs.valueQuantity.value) - results.loc[uid, f"prob_{label}"]) < 1e-6
            assert obs.interpretation[0].coding[0].code == ("POS" if results.loc[uid, f"decision_{label}"] else "NEG")
            assert obs.status == "preliminary" and obs.subject is None
    devices = [p for p in parsed if p["resourceType"] == "Device"]
    assert len(devices) == len(list((scored_demo.out / "fhir").glob("part-*.ndjson")))  # the model, once per part
    assert {i["system"] for d in devices for i in d["identifier"]} == {"urn:medfusion:model", "urn:medfusion:model-id"}
    assert {o.device.reference for o in observations.values()} == {f"Device/{devices[0]['id']}"}
    # no patient data: no subject, no dates, no identifiers (accession numbers) in any result resource
    for resource in parsed:
        if resource["resourceType"] == "Device":
            continue  # identified by the model's name, version and id (above)
        assert not {
            "subject",
            "effectiveDateTime",
            "issued",
            "identifier",
            "effectivePeriod",
        } & set(resource)
