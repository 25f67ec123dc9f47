"""The hospital login's role mapping and its ``secrets.toml`` checks (pure functions; no provider runs here)."""

from __future__ import annotations

import pytest

from medfusion.errors import ConfigError
from medfusion.review.oidc import RoleGrant, RoleMap, auth_problems, user_from_claims

ROLES = "rad-attending=reviewer+identifiers, rad-resident=viewer, pacs-admin=admin"
GOOD_AUTH = {
    "redirect_uri": "https://review.hospital.example/oauth2callback",
    "cookie_secret": "k" * 40,
    "client_id": "medfusion-review",
    "client_secret": "from-the-idp",
    "server_metadata_url": "https://idp.hospital.example/.well-known/openid-configuration",
}


def test_role_map_parses_values_roles_and_the_identifiers_flag() -> None:
    roles = RoleMap.parse("groups", ROLES)
    assert roles.claim == "groups"
    assert roles.grants == {
        "rad-attending": RoleGrant("reviewer", True),
        "rad-resident": RoleGrant("viewer", False),
        "pacs-admin": RoleGrant("admin", False),
    }
    assert RoleMap.parse(None, "").claim == "roles" and RoleMap.parse(None, "").grants == {}


@pytest.mark.parametrize("bad", ["rad-attending", "x=superuser", "=viewer", "x=viewer+everything"])
def test_role_map_refuses_malformed_entries(bad: str) -> None:
    with pytest.raises(ConfigError, match="OIDC role map entry"):
        RoleMap.parse("roles", bad)


def test_claims_map_to_the_most_capable_role_and_any_identifier_grant() -> None:
    roles = RoleMap.parse("groups", ROLES)
    resident = user_from_claims({"preferred_username": "r.lee", "groups": ["rad-resident", "nurses"]}, roles)
    assert resident is not None
    assert (resident.name, resident.role, resident.via, resident.may_see_identifiers) == (
        "r.lee",
        "viewer",
        "oidc",
        False,
    )
    assert not resident.can_decide and not resident.is_admin
    both = user_from_claims(
        {"email": "a@h.example", "name": "Smith^Ann", "groups": ["rad-resident", "rad-attending"]}, roles
    )
    assert both is not None and (both.name, both.role, both.may_see_identifiers) == ("a@h.example", "reviewer", True)
    assert both.signature == "Smith^Ann"
    admin = user_from_claims({"sub": "42", "groups": "pacs-admin"}, roles)  # a single string claim
    assert admin is not None and admin.is_admin and admin.can_decide and not admin.may_see_identifiers


@pytest.mark.parametrize(
    "claims",
    [
        {"preferred_username": "x", "groups": ["nurses"]},  # no mapped value
        {"preferred_username": "x"},  # no claim at all
        {"preferred_username": "x", "roles": ["rad-attending"]},  # the right value in another claim
        {"groups": ["rad-attending"]},  # no name to record in the audit trail
    ],
)
def test_claims_without_a_mapped_role_or_a_name_are_refused(claims: dict) -> None:
    assert user_from_claims(claims, RoleMap.parse("groups", ROLES)) is None


def test_auth_section_checks() -> None:
    assert auth_problems(GOOD_AUTH) == []
    assert auth_problems(None) == ["no [auth] table in .streamlit/secrets.toml"]
    weak = {
        **GOOD_AUTH,
        "cookie_secret": "xxx",
        "redirect_uri": "https://review.example/",
        "server_metadata_url": "http://idp/x",
    }
    problems = auth_problems(weak)
    assert len(problems) == 3 and any("cookie_secret" in p for p in problems)
    assert any("redirect_uri" in p for p in problems) and any("https" in p for p in problems)
    named = {
        "redirect_uri": GOOD_AUTH["redirect_uri"],
        "cookie_secret": GOOD_AUTH["cookie_secret"],
        "hospital": {"client_id": "c"},
    }
    assert auth_problems(named, "hospital") == [
        "[auth.hospital] client_secret is missing",
        "[auth.hospital] server_metadata_url is missing",
    ]
    assert auth_problems(named, "other") == ["[auth.other] is missing"]
