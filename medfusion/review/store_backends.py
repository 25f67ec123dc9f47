"""Where the review store keeps its rows: an embedded sqlite file (default) or a PostgreSQL database.

Both backends hold the same schema with the same guarantees:

- ``decisions`` and ``measurements`` are append-only: triggers refuse ``UPDATE`` and ``DELETE`` (and,
  on PostgreSQL, ``TRUNCATE``), whoever connects;
- ``current_decisions`` is the latest row (highest id) per ``(study_uid, label)``;
- writers are serialised (sqlite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory
  lock), so row ids grow in commit order and one save's rows are consecutive: when two reviewers
  save on one study at once, the study's current decisions are those of the save committed last.

A location is a sqlite file path, or a ``postgresql://`` (or ``postgres://``) URL in libpq's format.
PostgreSQL credentials come from the URL or from libpq's environment (``PGPASSWORD``,
``PGPASSFILE`` / ``~/.pgpass``, ``PGUSER``, ...); :func:`redact` is the only form of a location
that appears in messages.

Each operation runs on a connection of its own (PostgreSQL: a few idle ones are kept open between
calls), so any number of app servers and threads may share one store.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from medfusion.errors import MedfusionError

#: URL schemes that select the PostgreSQL backend.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: Seconds to wait for a PostgreSQL connection unless the URL sets ``connect_timeout``.
CONNECT_TIMEOUT_S = 10
#: Advisory lock keys (64-bit): one serialises writers, one serialises schema creation.
_WRITE_LOCK = 0x6D6564_66757331  # "med" "fus1"
_SCHEMA_LOCK = 0x6D6564_66757330  # "med" "fus0"

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    label TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('agree', 'disagree', 'corrected')),
    corrected_value INTEGER CHECK (corrected_value IN (0, 1)),
    comment TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    shown_probability REAL NOT NULL,
    shown_threshold REAL NOT NULL,
    shown_methods TEXT NOT NULL,
    shown_opacity REAL,
    CHECK ((decision = 'corrected') = (corrected_value IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS decisions_by_study ON decisions (study_uid, label, id);
CREATE TRIGGER IF NOT EXISTS decisions_append_only_update BEFORE UPDATE ON decisions
BEGIN SELECT RAISE(ABORT, 'review decisions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS decisions_append_only_delete BEFORE DELETE ON decisions
BEGIN SELECT RAISE(ABORT, 'review decisions are append-only'); END;
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('ctr')),
    sop_instance_uid TEXT NOT NULL,
    cardiac_width REAL NOT NULL CHECK (cardiac_width > 0),
    thoracic_width REAL NOT NULL CHECK (thoracic_width > 0),
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_by_study ON measurements (study_uid, id);
CREATE TRIGGER IF NOT EXISTS measurements_append_only_update BEFORE UPDATE ON measurements
BEGIN SELECT RAISE(ABORT, 'review measurements are append-only'); END;
CREATE TRIGGER IF NOT EXISTS measurements_append_only_delete BEFORE DELETE ON measurements
BEGIN SELECT RAISE(ABORT, 'review measurements are append-only'); END;
CREATE VIEW IF NOT EXISTS current_decisions AS
    SELECT d.* FROM decisions d
    WHERE d.id = (SELECT MAX(e.id) FROM decisions e WHERE e.study_uid = d.study_uid AND e.label = d.label);
"""

# The same schema in PostgreSQL's dialect: DOUBLE PRECISION (REAL is 4 bytes there), identity ids,
# statement-level plpgsql triggers (they fire even when no row matches, and on TRUNCATE).
POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_uid TEXT NOT NULL,
    label TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('agree', 'disagree', 'corrected')),
    corrected_value INTEGER CHECK (corrected_value IN (0, 1)),
    comment TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    shown_probability DOUBLE PRECISION NOT NULL,
    shown_threshold DOUBLE PRECISION NOT NULL,
    shown_methods TEXT NOT NULL,
    shown_opacity DOUBLE PRECISION,
    CHECK ((decision = 'corrected') = (corrected_value IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS decisions_by_study ON decisions (study_uid, label, id);
CREATE TABLE IF NOT EXISTS measurements (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_uid TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('ctr')),
    sop_instance_uid TEXT NOT NULL,
    cardiac_width DOUBLE PRECISION NOT NULL CHECK (cardiac_width > 0),
    thoracic_width DOUBLE PRECISION NOT NULL CHECK (thoracic_width > 0),
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_by_study ON measurements (study_uid, id);
CREATE OR REPLACE FUNCTION medfusion_review_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'review % are append-only', TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE OR REPLACE TRIGGER decisions_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON decisions
    FOR EACH STATEMENT EXECUTE FUNCTION medfusion_review_append_only();
CREATE OR REPLACE TRIGGER measurements_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON measurements
    FOR EACH STATEMENT EXECUTE FUNCTION medfusion_review_append_only();
CREATE OR REPLACE VIEW current_decisions AS
    SELECT d.* FROM decisions d
    WHERE d.id = (SELECT MAX(e.id) FROM decisions e WHERE e.study_uid = d.study_uid AND e.label = d.label);
"""


class StoreUnavailable(MedfusionError):
    """The review store cannot be opened or reached; the message names it (without credentials)."""


class Session(Protocol):
    """One connection's statements, written with ``?`` placeholders for both backends."""

    def execute(self, sql: str, args: Sequence[object] = ()) -> list[Mapping[str, Any]]:
        """Run one statement; returns its rows (column name -> value), empty for none."""
        ...


def is_postgres_url(location: str | Path) -> bool:
    """Whether ``location`` is a PostgreSQL URL (else it is a sqlite file path)."""
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def redact(location: str | Path) -> str:
    """``location`` fit for messages: a URL loses its password and query (which may hold one).

    Examples:
        ``postgresql://app:s3cret@db:5432/review?sslmode=require`` -> ``postgresql://app@db:5432/review``
    """
    if not is_postgres_url(location):
        return str(location)
    parts = urlsplit(str(location))
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{parts.scheme}://{user}{at}{hosts}{parts.path}"


class Backend(ABC):
    """A review store's database: sessions for reading and for (serialised) writing."""

    #: The location without credentials.
    label: str

    @abstractmethod
    def session(self, *, write: bool) -> AbstractContextManager[Session]:
        """A session in one transaction: committed on normal exit, rolled back on an error.

        Args:
            write: Serialise with other writers (row ids then grow in commit order).
        """


class SqliteBackend(Backend):
    """An sqlite file in WAL mode; writers take the database lock up front (``BEGIN IMMEDIATE``).

    Args:
        path: The sqlite file (created with its folder when missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.label = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SQLITE_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        return con

    @contextmanager
    def session(self, *, write: bool) -> Iterator[Session]:
        """See :meth:`Backend.session`."""
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SqliteSession(con)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise


class _SqliteSession:
    def __init__(self, con: sqlite3.Connection) -> None:
        self._con = con

    def execute(self, sql: str, args: Sequence[object] = ()) -> list[Mapping[str, Any]]:
        return list(self._con.execute(sql, tuple(args)).fetchall())


class PostgresBackend(Backend):
    """A PostgreSQL database (psycopg 3; ``pip install 'medfusion[postgres]'``).

    The schema is created when missing (under an advisory lock, so app servers starting together do
    not race); when it is there nothing is created, so a role with only ``SELECT`` and ``INSERT``
    can use the store.

    Args:
        url: ``postgresql://[user[:password]@]host[:port]/dbname[?param=value]``.

    Raises:
        StoreUnavailable: psycopg is not installed, or the database cannot be reached.
    """

    def __init__(self, url: str) -> None:
        try:
            import psycopg  # noqa: F401  (optional dependency)
        except ImportError:
            raise StoreUnavailable(
                f"review store {redact(url)}: PostgreSQL needs psycopg: pip install 'medfusion[postgres]'"
            ) from None
        self.label = redact(url)
        self._conninfo = _conninfo(url, self.label)
        with self.session(write=False) as db:
            present = db.execute(
                "SELECT to_regclass('decisions') IS NOT NULL AND to_regclass('measurements') IS NOT NULL"
                " AND to_regclass('current_decisions') IS NOT NULL AS ready"
            )[0]["ready"]
        if not present:
            with self._connection() as con, con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                con.execute(POSTGRES_SCHEMA)  # several statements, so no parameters

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """An autocommit connection: an idle one of this process (checked alive) or a new one."""
        import psycopg
        from psycopg.rows import dict_row

        con = _IDLE.take(self._conninfo)
        if con is None:
            try:
                con = psycopg.connect(self._conninfo, autocommit=True, row_factory=dict_row)
            except psycopg.OperationalError as err:
                raise StoreUnavailable(f"review store {self.label}: cannot connect: {_first_line(err)}") from None
        try:
            yield con
        finally:
            _IDLE.give_back(self._conninfo, con)

    @contextmanager
    def session(self, *, write: bool) -> Iterator[Session]:
        """See :meth:`Backend.session`."""
        with self._connection() as con, con.transaction():
            if write:
                # Held until commit: the next writer's ids come after this one's committed rows.
                con.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            yield _PostgresSession(con)


def _conninfo(url: str, label: str) -> str:
    """libpq's connection string for ``url``, with a connect timeout and an application name."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        options = conninfo_to_dict(url)
    except psycopg.ProgrammingError as err:
        raise StoreUnavailable(f"review store {label}: not a valid PostgreSQL URL ({_first_line(err)})") from None
    options.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    options.setdefault("application_name", "medfusion-review")
    return make_conninfo("", **options)


class _IdleConnections:
    """Connections kept open between store calls (a connection costs a TCP and SCRAM handshake,
    tens of milliseconds, a query on an open one about one). At most :attr:`MAX_IDLE` in a process,
    the least recently used closed first; each is used by one caller at a time; a connection is
    checked alive before reuse and never reused in a forked child."""

    MAX_IDLE = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[tuple[str, int, Any]] = []  # (conninfo, pid, connection), oldest first

    def take(self, conninfo: str) -> Any | None:
        import psycopg

        while True:
            with self._lock:
                found = next((i for i in reversed(range(len(self._idle))) if self._idle[i][0] == conninfo), None)
                if found is None:
                    return None
                _, pid, con = self._idle.pop(found)
            if pid != os.getpid():
                continue  # the parent's socket: never touched here
            try:
                con.execute("SELECT 1")
                return con
            except psycopg.Error:
                con.close()

    def give_back(self, conninfo: str, con: Any) -> None:
        from psycopg.pq import TransactionStatus

        if con.closed or con.broken or con.info.transaction_status != TransactionStatus.IDLE:
            con.close()
            return
        with self._lock:
            self._idle.append((conninfo, os.getpid(), con))
            evicted = self._idle[: -self.MAX_IDLE] if len(self._idle) > self.MAX_IDLE else []
            del self._idle[: len(evicted)]
        for _, pid, old in evicted:
            if pid == os.getpid():
                old.close()


_IDLE = _IdleConnections()


class _PostgresSession:
    def __init__(self, con: Any) -> None:
        self._con = con

    def execute(self, sql: str, args: Sequence[object] = ()) -> list[Mapping[str, Any]]:
        cur = self._con.execute(sql.replace("?", "%s"), tuple(args))
        return list(cur.fetchall()) if cur.description is not None else []


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def open_backend(location: str | Path) -> Backend:
    """The backend for a sqlite path or a PostgreSQL URL.

    Raises:
        StoreUnavailable: The PostgreSQL store cannot be used (see :class:`PostgresBackend`).
    """
    if is_postgres_url(location):
        return PostgresBackend(str(location))
    return SqliteBackend(location)
