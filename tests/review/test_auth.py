"""Login: scrypt hashes, constant-time verification, lockout, trusted header."""

from __future__ import annotations

import pytest

from medfusion.errors import ConfigError, InputRejected
from medfusion.review.auth import (
    Authenticator,
    LoginRefused,
    LoginThrottle,
    add_user,
    hash_password,
    read_users,
    verify_password,
)


def test_hash_is_salted_and_verifies_only_the_right_password() -> None:
    a, b = hash_password("s3cret"), hash_password("s3cret")
    assert a != b and a.startswith("scrypt$16384$8$1$")
    assert verify_password("s3cret", a) and verify_password("s3cret", b)
    assert not verify_password("s3cret ", a)
    assert not verify_password("s3cret", "pbkdf2$garbage")


def test_users_file_holds_no_clear_password_and_logs_in(tmp_path) -> None:
    users = tmp_path / "users.yaml"
    add_user(users, "alice", "correct horse", role="reviewer")
    add_user(users, "bob", "battery staple", role="viewer")
    assert "correct horse" not in users.read_text()
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    auth = Authenticator(users, failure_delay_s=0)
    alice = auth.login("alice", "correct horse")
    assert (alice.name, alice.role, alice.can_decide) == ("alice", "reviewer", True)
    assert auth.login("bob", "battery staple").can_decide is False
    with pytest.raises(LoginRefused):
        auth.login("alice", "battery staple")
    with pytest.raises(LoginRefused):
        auth.login("mallory", "correct horse")


def test_name_is_locked_after_repeated_failures_even_with_the_right_password(tmp_path) -> None:
    users = tmp_path / "users.yaml"
    add_user(users, "alice", "pw-1")
    now = [0.0]
    auth = Authenticator(
        users, LoginThrottle(max_failures=3, window_s=60, lockout_s=300, clock=lambda: now[0]), failure_delay_s=0
    )
    for _ in range(3):
        with pytest.raises(LoginRefused, match="wrong password"):
            auth.login("alice", "guess")
    with pytest.raises(LoginRefused, match="locked"):
        auth.login("alice", "pw-1")
    now[0] = 301.0
    assert auth.login("alice", "pw-1").name == "alice"


def test_trusted_header_is_opt_in(tmp_path) -> None:
    users = tmp_path / "users.yaml"
    add_user(users, "bob", "pw", role="viewer")
    assert Authenticator(users).from_headers({"X-Forwarded-User": "bob"}) is None
    auth = Authenticator(users, trusted_header="X-Forwarded-User")
    assert auth.from_headers({"X-Forwarded-User": "bob"}).role == "viewer"
    carol = auth.from_headers({"X-Forwarded-User": "carol"})
    assert (carol.name, carol.role, carol.via) == ("carol", "reviewer", "header")
    assert auth.from_headers({}) is None
    assert auth.from_headers({"X-Forwarded-User": "<script>"}) is None


def test_malformed_users_file_names_the_entry(tmp_path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text("users:\n  eve: {password: plaintext, role: reviewer}\n")
    with pytest.raises(ConfigError, match=r"users\.eve\.password"):
        read_users(users)
    with pytest.raises(ConfigError, match="not found"):
        read_users(tmp_path / "missing.yaml")


def test_display_name_is_what_a_verified_result_is_signed_with(tmp_path) -> None:
    users = tmp_path / "users.yaml"
    add_user(users, "alice", "pw-1", display_name="Smith^Alice")
    add_user(users, "bob", "pw-2")
    auth = Authenticator(users, failure_delay_s=0)
    assert auth.login("alice", "pw-1").signature == "Smith^Alice"
    assert auth.login("bob", "pw-2").signature == "bob"  # none set: the login name
    for bad in ("", "a\\b", "x" * 65, "tab\there"):
        with pytest.raises(InputRejected, match="display name"):
            add_user(users, "carol", "pw-3", display_name=bad)
    users.write_text("users:\n  dave: {password: null, role: reviewer, display_name: 7}\n")
    with pytest.raises(ConfigError, match=r"users\.dave\.display_name"):
        read_users(users)


def test_users_file_identifiers_flag_and_admin_role(tmp_path) -> None:
    from medfusion.review.auth import Authenticator, add_user, read_users

    users = tmp_path / "users.yaml"
    add_user(users, "dr.ids", "pw-123456", role="reviewer", identifiers=True)
    add_user(users, "boss", "pw-123456", role="admin")
    add_user(users, "plain", "pw-123456", role="viewer")
    entries = read_users(users)
    assert [(n, e.role, e.identifiers) for n, e in sorted(entries.items())] == [
        ("boss", "admin", False),
        ("dr.ids", "reviewer", True),
        ("plain", "viewer", False),
    ]
    auth = Authenticator(users, failure_delay_s=0.0)
    ids, boss, plain = (auth.login(n, "pw-123456") for n in ("dr.ids", "boss", "plain"))
    assert ids.may_see_identifiers and not boss.may_see_identifiers and not plain.may_see_identifiers
    assert (boss.is_admin, boss.can_decide) == (True, True)
    assert (ids.is_admin, ids.can_decide, plain.can_decide) == (False, True, False)
    users.write_text(users.read_text().replace("identifiers: true", "identifiers: 'yes'"))
    with pytest.raises(ConfigError, match="identifiers: expected true or false"):
        read_users(users)
