"""Log redaction (``medfusion.privacy``) and the tiny BERT vocabulary's guard against words of few reports."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from medfusion.privacy import REDACTED, forget_phi, install_log_redaction, redact, remember_phi


@pytest.fixture(autouse=True)
def _clean_memory() -> Iterator[None]:
    forget_phi()
    yield
    forget_phi()


def test_redact_whole_values_parts_and_paths() -> None:
    remember_phi("DOE^JANE", "MF1234567", "ACC7654321", None, "", "ab")
    assert (
        redact("patient DOE^JANE (jane doe) id MF1234567")
        == f"patient {REDACTED} ({REDACTED} {REDACTED}) id {REDACTED}"
    )
    assert redact("/data/acc7654321_scan.dcm failed") == f"/data/{REDACTED}_scan.dcm failed"
    assert redact("ab is too short to remember") == "ab is too short to remember"
    assert redact("nothing to hide here") == "nothing to hide here"


def test_log_records_are_redacted_before_any_handler(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    remember_phi("MF1234567", "DOE^JANE")
    log = logging.getLogger("some.third.party")
    with caplog.at_level(logging.DEBUG):
        log.debug("value %r of %s", "MF1234567", "DOE^JANE")
        try:
            raise ValueError("bad PatientID MF1234567")
        except ValueError:
            log.exception("failed")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "MF1234567" not in text and "DOE" not in text
    assert REDACTED in caplog.records[0].getMessage()


def test_vocabulary_leaves_out_words_of_few_reports(tmp_path) -> None:
    """The tiny BERT's vocabulary is saved with the model: a name in one report must not enter it."""
    from medfusion.models.tokenizer import train_wordpiece_tokenizer

    reports = ["Lungs are clear."] * 6 + ["Patient Halvorsen: lungs are clear."]
    vocab = train_wordpiece_tokenizer(reports, 500, tmp_path / "a", min_reports=5).get_vocab()
    assert "lungs" in vocab and "halvorsen" not in vocab and "patient" not in vocab
    assert "halvorsen" in train_wordpiece_tokenizer(reports, 500, tmp_path / "b").get_vocab()  # default: every word


@pytest.mark.parametrize(("user_setting", "disabled"), [(None, True), ("false", False), ("true", True)])
def test_mlflow_usage_telemetry_is_off_unless_the_user_turns_it_on(user_setting: str | None, disabled: bool) -> None:
    """MLflow sends usage data by default (MONAI imports it even in jobs that track nothing): importing
    medfusion turns that off, and an explicit user setting wins."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    if user_setting is not None:
        env["MLFLOW_DISABLE_TELEMETRY"] = user_setting
    code = (
        "import medfusion\n"
        "from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY\n"
        "print(MLFLOW_DISABLE_TELEMETRY.get())"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(disabled)
