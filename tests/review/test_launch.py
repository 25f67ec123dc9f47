"""``medfusion review``: settings through the environment, first user, streamlit command, CLI subcommands."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from medfusion.cli import app
from medfusion.errors import ConfigError
from medfusion.review.auth import Authenticator, read_users
from medfusion.review.launch import ensure_users, has_scores, streamlit_command
from medfusion.review.settings import ReviewSettings
from tests.scoring.orthanc_server import free_port


def test_settings_round_trip_through_the_environment(tmp_path) -> None:
    settings = ReviewSettings.create(
        tmp_path / "scores",
        tracking_uri="sqlite:///x.db",
        trusted_header="X-Forwarded-User",
        viewer_url_template="https://pacs/ohif/viewer?StudyInstanceUIDs={study_uid}",
        oidc_provider="hospital",
        oidc_role_claim="groups",
        oidc_roles="rad=reviewer+identifiers",
    )
    assert settings.store_path == tmp_path / "scores" / "review.sqlite"
    assert settings.users_path == tmp_path / "review_users.yaml"
    assert ReviewSettings.from_env(settings.to_env()) == settings
    with pytest.raises(ConfigError, match="MEDFUSION_REVIEW_RESULTS"):
        ReviewSettings.from_env({})


def test_a_postgresql_store_url_travels_through_the_environment_and_shows_without_password(tmp_path) -> None:
    url = "postgresql://app:s3cret@db.hospital:5432/review?sslmode=require"
    settings = ReviewSettings.create(tmp_path / "scores", store_path=url)
    assert settings.store_url == url and settings.store_location == url  # not mangled into a Path
    assert settings.store_label == "postgresql://app@db.hospital:5432/review"
    assert ReviewSettings.from_env(settings.to_env()) == settings
    sqlite = ReviewSettings.create(tmp_path / "scores")
    assert sqlite.store_url is None and sqlite.store_location == sqlite.store_path
    assert sqlite.store_label == "review.sqlite"


def test_cli_names_an_unreachable_store_without_its_password(tmp_path) -> None:
    port = free_port()
    url = f"postgresql://app:s3cret@127.0.0.1:{port}/review?connect_timeout=5"
    result = CliRunner().invoke(
        app, ["review", "export", "--results", str(tmp_path), "--store", url, "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert f"error: review store postgresql://app@127.0.0.1:{port}/review: cannot connect" in result.output
    assert "s3cret" not in result.output


def test_first_user_gets_a_generated_password_once(tmp_path) -> None:
    users = tmp_path / "review_users.yaml"
    first = ensure_users(users)
    assert first is not None and len(first.password) >= 16
    assert first.password not in users.read_text()
    assert Authenticator(users, failure_delay_s=0).login(first.name, first.password).can_decide
    assert ensure_users(users) is None  # never overwritten


def test_streamlit_runs_headless_on_loopback() -> None:
    command = streamlit_command(8765)
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4].endswith("medfusion/review/app/page.py")
    assert {
        "--server.headless=true",
        "--server.address=127.0.0.1",
        "--server.port=8765",
        "--browser.gatherUsageStats=false",
    } <= set(command)
    assert "--runner.postScriptGC=false" in command  # a full gc.collect after each run froze every session for seconds


def test_cli_add_user_and_hash_password(tmp_path) -> None:
    users = tmp_path / "users.yaml"
    runner = CliRunner()
    result = runner.invoke(
        app, ["review", "add-user", "dr.bob", "--users", str(users), "--role", "viewer"], input="pw-123\npw-123\n"
    )
    assert result.exit_code == 0, result.output
    assert read_users(users)["dr.bob"].role == "viewer"
    result = runner.invoke(
        app,
        ["review", "add-user", "boss", "--users", str(users), "--role", "admin", "--identifiers"],
        input="pw-123\npw-123\n",
    )
    assert result.exit_code == 0, result.output
    assert (read_users(users)["boss"].role, read_users(users)["boss"].identifiers) == ("admin", True)
    assert read_users(users)["dr.bob"].identifiers is False
    result = runner.invoke(app, ["review", "hash-password"], input="pw-123\npw-123\n")
    assert result.exit_code == 0 and result.output.strip().splitlines()[-1].startswith("scrypt$")


def test_cli_refuses_a_results_folder_without_scores(tmp_path) -> None:
    empty = tmp_path / "scores"
    empty.mkdir()
    assert not has_scores(empty)
    result = CliRunner().invoke(app, ["review", "--results", str(empty)])
    assert result.exit_code == 1 and "no scoring output" in result.output


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_cli_export_writes_labels_and_fhir(review_project, tmp_path, backend, request, monkeypatch) -> None:
    from medfusion.review.store import Decision, ReviewStore, Shown
    from medfusion.scoring import read_results

    results = read_results(review_project.results_dir)
    uid = results["study_uid"].iloc[0]
    store: object = tmp_path / "review.sqlite"
    if backend == "postgresql":  # the password from libpq's environment, not the command line
        server = request.getfixturevalue("postgres")
        store = server.url(server.create_database(), password="")
        monkeypatch.setenv("PGPASSWORD", server.password)
    ReviewStore(store).record(
        Decision(uid, "nodule", "corrected", "dr.alice", "medfusion", "1", Shown(0.6, 0.5), corrected_value=False)
    )
    result = CliRunner().invoke(
        app,
        [
            "review",
            "export",
            "--results",
            str(review_project.results_dir),
            "--store",
            str(store),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    csv = (tmp_path / "out" / "reviewed_labels.csv").read_text().splitlines()
    assert csv[0] == "study_uid,nodule,cardiomegaly,effusion,fracture,pneumonia"
    assert csv[1] == f"{uid},0,,,,"
    lines = (tmp_path / "out" / "reviewed_labels.ndjson").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["amended", "amended"]  # the report, its observation


def test_cli_export_leaves_comments_out_unless_asked(review_project, tmp_path) -> None:
    from medfusion.review.store import Decision, ReviewStore, Shown
    from medfusion.scoring import read_results

    uid = read_results(review_project.results_dir)["study_uid"].iloc[0]
    store = tmp_path / "review.sqlite"
    ReviewStore(store).record(
        Decision(
            uid,
            "nodule",
            "agree",
            "dr.alice",
            "medfusion",
            "1",
            Shown(0.6, 0.5),
            comment="Patient John Smith MRN 12345",
        )
    )
    common = ["review", "export", "--results", str(review_project.results_dir), "--store", str(store)]
    for flags, out in (([], tmp_path / "plain"), (["--include-comments"], tmp_path / "with")):
        result = CliRunner().invoke(app, [*common, "--out", str(out), *flags])
        assert result.exit_code == 0, result.output
    for name in ("reviewed_labels.csv", "reviewed_labels.ndjson"):
        assert "John Smith" not in (tmp_path / "plain" / name).read_text()
        assert "Patient John Smith MRN 12345" in (tmp_path / "with" / name).read_text()
