"""A scored demo test split (through ``medfusion review``'s own path) and a users file, per session;
a PostgreSQL server for the review store's second backend."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from medfusion.review.auth import add_user
from medfusion.review.launch import score_demo_test_split
from medfusion.review.settings import ReviewSettings
from tests.support.postgres import PostgresServer, running_postgres

PASSWORD = "reviewer-pw-1"


@dataclass(frozen=True)
class ReviewProject:
    """Scores of the demo test split and the app settings over them (tests copy the store path)."""

    demo: object
    results_dir: Path
    users_path: Path

    def settings(self, store: Path) -> ReviewSettings:
        """Settings with a test's own review store; the model explained is the one that scored."""
        return ReviewSettings.create(
            self.results_dir,
            store_path=store,
            users_path=self.users_path,
            tracking_uri=self.demo.tracking_uri,
            login_delay_s=0.2,
        )


@pytest.fixture(scope="session")
def review_project(demo_project, tmp_path_factory: pytest.TempPathFactory) -> ReviewProject:
    root = tmp_path_factory.mktemp("review")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        score_demo_test_split(demo_project.config, root / "scores", demo_project.model_uri, demo_project.tracking_uri)
    finally:
        torch.set_num_threads(before)
    users = root / "users.yaml"
    add_user(users, "dr.alice", PASSWORD, role="reviewer", display_name="Alice^Reviewer")
    add_user(users, "viewer.bob", PASSWORD, role="viewer")
    return ReviewProject(demo_project, root / "scores", users)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server on loopback for the session (skipped when not installed, failed when
    ``MEDFUSION_REQUIRE_SYSTEM_TESTS=1``); stopped at the end."""
    with running_postgres() as server:
        yield server
