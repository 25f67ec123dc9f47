"""What only the PostgreSQL store has: URLs and credentials, an app role without UPDATE/DELETE,
clear errors when the database cannot be reached."""

from __future__ import annotations

import time

import pytest

from medfusion.review.store import ReviewStore
from medfusion.review.store_backends import StoreUnavailable, redact
from tests.review.test_store import _decision
from tests.scoring.orthanc_server import free_port
from tests.support.postgres import APP_ROLE, PostgresServer


def test_redact_drops_the_password_and_the_query() -> None:
    assert redact("postgresql://app:s3cret@db:5432/review?sslmode=require&password=x") == (
        "postgresql://app@db:5432/review"
    )
    assert redact("postgres://db/review") == "postgres://db/review"
    assert redact("/data/review.sqlite") == "/data/review.sqlite"


def test_the_password_may_come_from_pgpassword_and_never_shows(postgres: PostgresServer, monkeypatch) -> None:
    dbname = postgres.create_database()
    with_password = ReviewStore(postgres.url(dbname))
    assert postgres.password not in repr(with_password) and postgres.password not in with_password.location
    assert with_password.location == f"postgresql://{APP_ROLE}@127.0.0.1:{postgres.port}/{dbname}"
    assert with_password.path is None

    monkeypatch.setenv("PGPASSWORD", postgres.password)
    from_env = ReviewStore(postgres.url(dbname, password=""))
    from_env.record(_decision())
    assert [r.reviewer for r in with_password.audit()] == ["alice"]


def test_a_wrong_password_or_a_dead_server_is_a_clear_bounded_error(postgres: PostgresServer) -> None:
    dbname = postgres.create_database()
    with pytest.raises(StoreUnavailable, match="password authentication failed") as wrong:
        ReviewStore(postgres.url(dbname, password="not-the-password"))
    assert "not-the-password" not in str(wrong.value)
    assert f"postgresql://{APP_ROLE}@127.0.0.1:{postgres.port}/{dbname}" in str(wrong.value)

    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        ReviewStore(f"postgresql://{APP_ROLE}:pw@127.0.0.1:{free_port()}/{dbname}?connect_timeout=5")
    assert time.monotonic() - started < 10


def test_an_app_role_with_only_select_and_insert_uses_an_existing_store(postgres: PostgresServer) -> None:
    """The deployment in docs/review.md: the owner creates the schema, app servers log in as a role
    that can read and append, nothing more."""
    dbname = postgres.create_database()
    ReviewStore(postgres.url(dbname))  # the owner creates the schema
    with postgres.admin(dbname) as con:
        con.execute("CREATE ROLE review_app LOGIN PASSWORD 'app-pw'")
        con.execute("GRANT SELECT, INSERT ON decisions, measurements TO review_app")
        con.execute("GRANT SELECT ON current_decisions TO review_app")

    app = ReviewStore(postgres.url(dbname, user="review_app", password="app-pw"))
    app.record(_decision())
    app.record(_decision(kind="disagree"))
    assert [r.decision for r in app.current()] == ["disagree"]

    import psycopg

    with psycopg.connect(postgres.url(dbname, user="review_app", password="app-pw"), autocommit=True) as con:
        for statement in ("UPDATE decisions SET comment = 'x'", "DELETE FROM decisions", "TRUNCATE decisions"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                con.execute(statement)
        assert con.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 2


def test_connections_are_reused_and_a_dropped_one_is_replaced(postgres: PostgresServer) -> None:
    dbname = postgres.create_database()
    store = ReviewStore(postgres.url(dbname))
    for _ in range(20):
        store.record(_decision())
        store.current()

    def sessions() -> list[int]:
        with postgres.admin() as con:
            rows = con.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'medfusion-review'",
                (dbname,),
            ).fetchall()
        return [pid for (pid,) in rows]

    assert len(sessions()) == 1  # forty calls, one connection
    with postgres.admin() as con:  # as when the server restarts or a proxy drops idle connections
        for pid in sessions():
            con.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 10
    while sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    store.record(_decision(kind="disagree"))
    assert [r.decision for r in store.current()] == ["disagree"] and len(store.audit()) == 21
