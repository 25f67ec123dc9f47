"""Who may use the review app: a users file with salted scrypt hashes, or a trusted upstream header.

Users file (YAML; path from ``MEDFUSION_REVIEW_USERS`` or ``medfusion review --users``)::

    users:
      alice:
        password: "scrypt$16384$8$1$<salt base64>$<key base64>"
        role: reviewer        # admin: reviewer + the admin page; reviewer: decides, exports; viewer: reads
        identifiers: true     # optional (default false): show accession, study date, age, sex

Write entries with ``medfusion review add-user NAME`` (or print a hash with
``medfusion review hash-password``); passwords are never stored in clear.

Verification derives the key with :func:`hashlib.scrypt` and compares with
:func:`hmac.compare_digest`; an unknown user costs the same scrypt work as a known one. After
``max_failures`` failed logins for a name within ``window_s`` the name is locked for ``lockout_s``,
and every failure waits ``failure_delay_s`` before answering.

Trusted header (opt-in, ``MEDFUSION_REVIEW_TRUSTED_HEADER=X-Forwarded-User``): behind a reverse
proxy that authenticates users and sets the header, the app trusts it. Only enable it when the app
listens on loopback behind that proxy (``medfusion review`` binds 127.0.0.1), otherwise anyone can
send the header. The role comes from the users file when the name is listed there, else
``reviewer``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from medfusion.errors import ConfigError, InputRejected

Role = Literal["admin", "reviewer", "viewer"]
#: Roles, most capable first: ``admin`` (a reviewer who also sees the admin page: users, health,
#: settings), ``reviewer`` (decides, exports), ``viewer`` (reads only).
ROLES: tuple[str, ...] = ("admin", "reviewer", "viewer")

# scrypt cost: 16 MiB of memory and ~50 ms per check on one core.
_N, _R, _P, _KEY_BYTES = 2**14, 8, 1, 32
_USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


@dataclass(frozen=True)
class User:
    """A logged-in user.

    Attributes:
        name: Login name (recorded as the reviewer in the audit trail).
        role: ``admin`` (a reviewer who also administers), ``reviewer`` (decides, exports) or
            ``viewer`` (reads only).
        via: ``password``, ``header`` or ``oidc`` (the hospital identity provider, ``st.login``).
        display_name: The name signed on results sent to the hospital (a verified DICOM SR's verifying
            observer, ``Family^Given`` or free text); None: the login name.
        may_see_identifiers: Whether the app shows this user the study's identifying header values
            (accession number, study date, patient age and sex), read at display time and never
            logged, exported, cached to disk or written to the audit trail.
    """

    name: str
    role: Role
    via: Literal["password", "header", "oidc"] = "password"
    display_name: str | None = None
    may_see_identifiers: bool = False

    @property
    def signature(self) -> str:
        """The name signed on verified results: the display name, else the login name."""
        return self.display_name or self.name

    @property
    def can_decide(self) -> bool:
        """Whether the user may record decisions and export labels."""
        return self.role in ("admin", "reviewer")

    @property
    def is_admin(self) -> bool:
        """Whether the user sees the admin page (users, health, settings)."""
        return self.role == "admin"


class LoginRefused(Exception):
    """A login attempt failed; the message is safe to show (it never says which part was wrong)."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Salted scrypt hash of a password: ``scrypt$N$r$p$<salt b64>$<key b64>``."""
    if not password:
        raise InputRejected("password", "empty password")
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_KEY_BYTES, maxmem=64 * 2**20)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(key).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` string (constant-time compare)."""
    try:
        scheme, n, r, p, salt_b64, key_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(key_b64)
        key = hashlib.scrypt(
            password.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected), maxmem=64 * 2**20
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(key, expected)


#: Hash checked for unknown users so that their failure costs as much as a known user's.
_DUMMY_HASH = hash_password("medfusion-unknown-user", salt=b"\x00" * 16)


def generate_password() -> str:
    """A random password for a first user (printed once, never stored in clear)."""
    return secrets.token_urlsafe(12)


@dataclass(frozen=True)
class UserEntry:
    """One users-file entry: the password hash (None for header-only users), the role, the display name and
    whether the user may see identifiers."""

    password_hash: str | None
    role: Role
    display_name: str | None = None
    identifiers: bool = False


def read_users(path: str | Path) -> dict[str, UserEntry]:
    """Read a users file.

    Raises:
        ConfigError: The file is missing, not YAML, or an entry is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: users file not found (create one with 'medfusion review add-user NAME')")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable YAML users file ({type(exc).__name__})") from None
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise ConfigError(f"{path}: expected a 'users:' mapping of name -> {{password, role}}")
    entries = {}
    for name, entry in users.items():
        if not isinstance(entry, dict) or entry.get("role", "reviewer") not in ROLES:
            raise ConfigError(f"{path}: users.{name}: expected {{password: <hash>, role: {' | '.join(ROLES)}}}")
        password = entry.get("password")
        if password is not None and not str(password).startswith("scrypt$"):
            raise ConfigError(
                f"{path}: users.{name}.password: not a scrypt hash (use 'medfusion review hash-password')"
            )
        display = entry.get("display_name")
        if display is not None and (not isinstance(display, str) or not _valid_display_name(display)):
            raise ConfigError(f"{path}: users.{name}.display_name: {_DISPLAY_NAME_RULE}")
        identifiers = entry.get("identifiers", False)
        if not isinstance(identifiers, bool):
            raise ConfigError(f"{path}: users.{name}.identifiers: expected true or false")
        entries[str(name)] = UserEntry(
            password_hash=password,
            role=entry.get("role", "reviewer"),
            display_name=display or None,
            identifiers=identifiers,
        )
    return entries


_DISPLAY_NAME_RULE = "at most 64 printable characters, no backslash (DICOM PN: Family^Given or free text)"


def _valid_display_name(text: str) -> bool:
    return 0 < len(text) <= 64 and text.isprintable() and "\\" not in text


def add_user(
    path: str | Path,
    name: str,
    password: str,
    role: Role = "reviewer",
    *,
    display_name: str | None = None,
    identifiers: bool = False,
) -> None:
    """Add or replace a user in a users file (created with mode 0600 when missing).

    Args:
        path: The users file.
        name: Login name.
        password: Password (stored as a scrypt hash).
        role: ``admin``, ``reviewer`` or ``viewer``.
        display_name: The name signed on verified results (see :class:`User`).
        identifiers: Whether the user may see the studies' identifying header values.
    """
    if not name or set(name) - _USERNAME_CHARS:
        raise InputRejected("user name", "use letters, digits and . _ - @ only")
    if display_name is not None and not _valid_display_name(display_name):
        raise InputRejected("display name", _DISPLAY_NAME_RULE)
    if role not in ROLES:
        raise InputRejected("role", f"must be one of {', '.join(ROLES)}")
    path = Path(path)
    data: dict = {"users": {}}
    if path.is_file():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {"users": {}}
        data.setdefault("users", {})
    data["users"][name] = {"password": hash_password(password), "role": role}
    if display_name:
        data["users"][name]["display_name"] = display_name
    if identifiers:
        data["users"][name]["identifiers"] = True
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# medfusion review users: scrypt password hashes, roles admin | reviewer | viewer\n")
        yaml.safe_dump(data, fh, sort_keys=True)


class LoginThrottle:
    """Counts failed logins per name; locks a name after too many failures in a window.

    Args:
        max_failures: Failures within ``window_s`` that lock the name.
        window_s: Sliding window, seconds.
        lockout_s: How long a locked name stays locked, seconds.
        clock: Time source (seconds), for tests.
    """

    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 900.0,
        lockout_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures, self.window_s, self.lockout_s, self.clock = max_failures, window_s, lockout_s, clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def locked(self, name: str) -> bool:
        """Whether the name is locked now."""
        with self._lock:
            return self._locked_until.get(name.lower(), 0.0) > self.clock()

    def failed(self, name: str) -> None:
        """Record a failure (may lock the name)."""
        key, now = name.lower(), self.clock()
        with self._lock:
            failures = self._failures[key]
            failures.append(now)
            while failures and failures[0] < now - self.window_s:
                failures.popleft()
            if len(failures) >= self.max_failures:
                self._locked_until[key] = now + self.lockout_s
                failures.clear()

    def succeeded(self, name: str) -> None:
        """Forget a name's failures."""
        with self._lock:
            self._failures.pop(name.lower(), None)


class Authenticator:
    """Checks logins against a users file.

    Args:
        users_path: The users file (re-read on each login, so added users work without a restart).
        throttle: Shared failure counter (one per app process).
        failure_delay_s: Wait before answering a failed login.
        trusted_header: Name of a trusted upstream auth header, or None (off).
    """

    def __init__(
        self,
        users_path: str | Path,
        throttle: LoginThrottle | None = None,
        failure_delay_s: float = 1.0,
        trusted_header: str | None = None,
    ) -> None:
        self.users_path = Path(users_path)
        self.throttle = throttle or LoginThrottle()
        self.failure_delay_s = failure_delay_s
        self.trusted_header = trusted_header or None

    def login(self, name: str, password: str) -> User:
        """Check a name and password.

        Raises:
            LoginRefused: Wrong name or password, or the name is locked.
        """
        name = name.strip()
        if self.throttle.locked(name):
            raise LoginRefused("Too many failed attempts: this account is locked for a few minutes.")
        entry = read_users(self.users_path).get(name)
        encoded = entry.password_hash if entry and entry.password_hash else _DUMMY_HASH
        ok = verify_password(password, encoded) and entry is not None and entry.password_hash is not None
        if not ok or entry is None:
            self.throttle.failed(name)
            time.sleep(self.failure_delay_s)
            raise LoginRefused("Unknown user name or wrong password.")
        self.throttle.succeeded(name)
        return User(name=name, role=entry.role, display_name=entry.display_name, may_see_identifiers=entry.identifiers)

    def from_headers(self, headers: Mapping[str, str] | None) -> User | None:
        """The user named by the trusted upstream header, or None (header mode off or header absent)."""
        if not self.trusted_header or headers is None:
            return None
        value = headers.get(self.trusted_header)
        name = (value or "").strip()
        if not name or set(name) - _USERNAME_CHARS:
            return None
        entry = read_users(self.users_path).get(name) if self.users_path.is_file() else None
        return User(
            name=name,
            role=entry.role if entry else "reviewer",
            via="header",
            display_name=entry.display_name if entry else None,
            may_see_identifiers=entry.identifiers if entry else False,
        )
