"""Per-method explanation checks kept with the model: ``<model_dir>/explanation_checks.json``.

``benchmarks/faithfulness.py --record`` writes the verdicts of the word-evidence deletion check
(:mod:`medfusion.explain.aopc`) and of the image model-randomisation check
(:mod:`medfusion.explain.randomisation`) into the model folder, beside ``medfusion_model.json``; the
review app reads them (:func:`read_checks`) and does not show a method that failed as evidence.

The file::

    {"model_id": "demo-...", "methods": {"gradient": {"check": "aopc", "passed": false,
     "cohort": "demo test split", "detail": "AOPC 0.12 vs random 0.10, ..."}, ...}}

A file written for another model (``model_id`` differs) is ignored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: File name inside the model folder.
CHECKS_FILE = "explanation_checks.json"


def read_checks(model_dir: str | Path | None, model_id: str) -> dict[str, dict[str, Any]]:
    """Method -> verdict record for ``model_id`` (empty when none was recorded or the file is unreadable)."""
    if model_dir is None:
        return {}
    path = Path(model_dir) / CHECKS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable explanation checks (%s); ignored", path, exc)
        return {}
    if not isinstance(data, dict) or data.get("model_id") != model_id or not isinstance(data.get("methods"), dict):
        return {}
    return {str(m): dict(v) for m, v in data["methods"].items() if isinstance(v, dict)}


def record_checks(model_dir: str | Path, model_id: str, verdicts: Mapping[str, Mapping[str, Any]]) -> Path:
    """Merge ``verdicts`` (method -> record with at least ``check`` and ``passed``) into the model's file."""
    path = Path(model_dir) / CHECKS_FILE
    methods = read_checks(model_dir, model_id)
    methods.update({m: dict(v) for m, v in verdicts.items()})
    path.write_text(json.dumps({"model_id": model_id, "methods": methods}, indent=1, sort_keys=True), encoding="utf-8")
    return path


def failed_methods(checks: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Method -> why it is not shown as evidence, for every method whose recorded check failed."""
    reasons = {
        "aopc": "failed the deletion (AOPC) faithfulness check",
        "randomisation": "failed the model-randomisation check",
    }
    return {
        m: reasons.get(str(v.get("check")), f"failed the {v.get('check')} check")
        for m, v in checks.items()
        if v.get("passed") is False
    }
