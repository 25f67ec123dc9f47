"""The hospital identity provider: Streamlit's OIDC login (``st.login``) with roles mapped from a claim.

Streamlit runs the OpenID Connect flow; its ``[auth]`` table in ``.streamlit/secrets.toml`` (in the
folder ``medfusion review`` is started from, or ``~/.streamlit/``) names the provider::

    [auth]
    redirect_uri = "https://review.hospital.example/oauth2callback"
    cookie_secret = "<at least 32 random characters>"
    client_id = "medfusion-review"
    client_secret = "<from the identity provider>"
    server_metadata_url = "https://idp.hospital.example/.well-known/openid-configuration"

Nothing is shipped with default secrets. Who gets which role is this app's own setting, never a default:
``MEDFUSION_REVIEW_OIDC_ROLE_CLAIM`` names the identity token's claim (default ``roles``; a string
or a list of strings, e.g. Entra ID app roles or Keycloak ``groups``) and
``MEDFUSION_REVIEW_OIDC_ROLES`` maps its values to roles, ``value=role[+identifiers]`` separated by
commas, e.g. ``rad-attending=reviewer+identifiers,rad-resident=viewer,pacs-admin=admin``. A user
with several mapped values gets the most capable role (admin > reviewer > viewer) and sees
identifiers when any matched value grants them; a user with none is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from medfusion.errors import ConfigError
from medfusion.review.auth import ROLES, Role, User

DEFAULT_ROLE_CLAIM = "roles"
#: Claims tried, in order, for the login name recorded in the audit trail.
NAME_CLAIMS = ("preferred_username", "email", "sub")
_PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")
_SHARED_KEYS = ("redirect_uri", "cookie_secret", "expose_tokens")
MIN_COOKIE_SECRET = 32


@dataclass(frozen=True)
class RoleGrant:
    """What one claim value grants: a role, and whether identifiers are shown."""

    role: Role
    identifiers: bool = False


@dataclass(frozen=True)
class RoleMap:
    """Claim name and claim value -> :class:`RoleGrant`."""

    claim: str
    grants: Mapping[str, RoleGrant]

    @classmethod
    def parse(cls, claim: str | None, text: str | None) -> RoleMap:
        """Parse ``value=role[+identifiers],...`` (see the module docstring).

        Raises:
            ConfigError: An entry is not ``value=role``, names an unknown role or an unknown flag.
        """
        grants: dict[str, RoleGrant] = {}
        for raw in (text or "").split(","):
            entry = raw.strip()
            if not entry:
                continue
            value, sep, granted = entry.rpartition("=")
            role, _, flag = granted.strip().partition("+")
            if not sep or not value.strip() or role not in ROLES or flag not in ("", "identifiers"):
                raise ConfigError(
                    f"OIDC role map entry {entry!r}: expected value=role or value=role+identifiers "
                    f"with role one of {', '.join(ROLES)}"
                )
            grants[value.strip()] = RoleGrant(role, flag == "identifiers")  # type: ignore[arg-type]
        return cls((claim or "").strip() or DEFAULT_ROLE_CLAIM, grants)

    def grant(self, claims: Mapping[str, Any]) -> RoleGrant | None:
        """The grant of an identity token's claims: the most capable matched role, or None (no match)."""
        raw = claims.get(self.claim)
        values = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list | tuple) else []
        matched = [self.grants[v] for v in values if isinstance(v, str) and v in self.grants]
        if not matched:
            return None
        role = min((g.role for g in matched), key=ROLES.index)
        return RoleGrant(role, any(g.identifiers for g in matched))


def user_from_claims(claims: Mapping[str, Any], roles: RoleMap) -> User | None:
    """The app user of a logged-in OIDC identity, or None when no claim value maps to a role (refused).

    The login name is the first of :data:`NAME_CLAIMS` present; the display name (signed on
    verified SRs) is the ``name`` claim when present.
    """
    name = next((str(claims[c]).strip() for c in NAME_CLAIMS if str(claims.get(c) or "").strip()), "")
    grant = roles.grant(claims)
    if not name or grant is None:
        return None
    display = str(claims.get("name") or "").strip()[:64] or None
    return User(name=name, role=grant.role, via="oidc", display_name=display, may_see_identifiers=grant.identifiers)


def auth_problems(auth: Mapping[str, Any] | None, provider: str | None = None) -> list[str]:
    """What is wrong with a ``secrets.toml`` ``[auth]`` table for ``st.login(provider)`` (empty: usable).

    Checks what Streamlit checks (shared ``redirect_uri`` ending in ``/oauth2callback``,
    ``cookie_secret``; the provider's ``client_id``, ``client_secret``, ``server_metadata_url``) and
    more: the cookie secret is long enough, the metadata URL is https, the redirect URI http(s).
    """
    if not auth:
        return ["no [auth] table in .streamlit/secrets.toml"]
    problems = []
    redirect = str(auth.get("redirect_uri") or "")
    if not redirect:
        problems.append("[auth] redirect_uri is missing")
    elif urlparse(redirect).scheme not in ("http", "https") or not redirect.endswith("/oauth2callback"):
        problems.append("[auth] redirect_uri must be the app's http(s) URL ending in /oauth2callback")
    secret = str(auth.get("cookie_secret") or "")
    if len(secret) < MIN_COOKIE_SECRET:
        problems.append(f"[auth] cookie_secret must be at least {MIN_COOKIE_SECRET} random characters")
    if provider is not None:
        section = auth.get(provider)
        where = f"[auth.{provider}]"
    else:
        section = {k: v for k, v in auth.items() if k not in _SHARED_KEYS and not isinstance(v, Mapping)}
        where = "[auth]"
    if not isinstance(section, Mapping):
        return [*problems, f"{where} is missing"]
    problems += [f"{where} {key} is missing" for key in _PROVIDER_KEYS if not section.get(key)]
    metadata = str(section.get("server_metadata_url") or "")
    if metadata and urlparse(metadata).scheme != "https":
        problems.append(f"{where} server_metadata_url must be an https URL")
    return problems
