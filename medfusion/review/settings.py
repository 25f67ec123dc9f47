"""The review app's configuration, passed from ``medfusion review`` to Streamlit through the environment.

=================================== ==============================================================
``MEDFUSION_REVIEW_RESULTS``        scoring output folder (``medfusion score --out DIR``)
``MEDFUSION_REVIEW_MODEL``          model URI or folder used for explanations (default: the
                                    scoring job's model, from the ledger)
``MEDFUSION_REVIEW_STORE``          review store: a sqlite file (default ``<results>/review.sqlite``)
                                    or a ``postgresql://`` URL shared by several app servers
``MEDFUSION_REVIEW_USERS``          users file (default ``<results>/../review_users.yaml``)
``MEDFUSION_REVIEW_TRUSTED_HEADER`` opt-in upstream auth header, e.g. ``X-Forwarded-User``
``MEDFUSION_REVIEW_LOGIN_DELAY``    seconds to wait after a failed login (default 1)
``MEDFUSION_REVIEW_VIEWER_URL``     "open in PACS viewer" link template with ``{study_uid}``, e.g.
                                    ``https://pacs/ohif/viewer?StudyInstanceUIDs={study_uid}``
``MEDFUSION_REVIEW_OIDC_PROVIDER``  ``st.login`` provider name (``[auth.<name>]``; default: the
                                    provider in ``[auth]`` itself)
``MEDFUSION_REVIEW_OIDC_ROLE_CLAIM`` identity-token claim holding roles/groups (default ``roles``)
``MEDFUSION_REVIEW_OIDC_ROLES``     claim value -> role map, ``value=role[+identifiers],...``
                                    (see :mod:`medfusion.review.oidc`; empty: no OIDC login)
``MLFLOW_TRACKING_URI``             MLflow store for ``models:/`` URIs
=================================== ==============================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Formatter
from urllib.parse import quote, urlparse

from medfusion.errors import ConfigError
from medfusion.review.store_backends import is_postgres_url, redact

ENV_RESULTS = "MEDFUSION_REVIEW_RESULTS"
ENV_MODEL = "MEDFUSION_REVIEW_MODEL"
ENV_STORE = "MEDFUSION_REVIEW_STORE"
ENV_USERS = "MEDFUSION_REVIEW_USERS"
ENV_HEADER = "MEDFUSION_REVIEW_TRUSTED_HEADER"
ENV_DELAY = "MEDFUSION_REVIEW_LOGIN_DELAY"
ENV_TRACKING = "MLFLOW_TRACKING_URI"
ENV_ORGANIZATION = "MEDFUSION_REVIEW_ORGANIZATION"
ENV_STOW = "MEDFUSION_REVIEW_STOW"
ENV_VIEWER_URL = "MEDFUSION_REVIEW_VIEWER_URL"
ENV_OIDC_PROVIDER = "MEDFUSION_REVIEW_OIDC_PROVIDER"
ENV_OIDC_CLAIM = "MEDFUSION_REVIEW_OIDC_ROLE_CLAIM"
ENV_OIDC_ROLES = "MEDFUSION_REVIEW_OIDC_ROLES"
#: Verifying organization of VERIFIED SRs when the site names none (DICOM requires a value).
DEFAULT_ORGANIZATION = "Radiology (organization not configured)"


@dataclass(frozen=True)
class ReviewSettings:
    """Everything the app needs to know.

    Attributes:
        results_dir: Scoring output folder.
        model_uri: Model for explanations (folder or MLflow URI); None = the scoring job's model.
        store_path: Review sqlite store (used when ``store_url`` is None).
        users_path: Users file.
        tracking_uri: MLflow store for ``models:/`` URIs, or None.
        trusted_header: Upstream auth header name, or None (off).
        login_delay_s: Wait after a failed login.
        organization: The verifying organization signed on VERIFIED DICOM SRs (the site's name).
        stow_url: DICOMweb root of the PACS that VERIFIED SRs are sent to (STOW-RS), or None (written
            only; credentials from ``MEDFUSION_DICOMWEB_USER`` / ``_PASSWORD`` as for scoring).
        store_url: A PostgreSQL review store (``postgresql://...``) shared by several app servers, or
            None (the sqlite file). Its password, if any, never appears in :attr:`store_label`.
        viewer_url_template: "Open in PACS viewer" link with a ``{study_uid}`` placeholder, or None.
        oidc_provider: ``st.login`` provider name, or None (the default provider).
        oidc_role_claim: Identity-token claim mapped to roles, or None (``roles``).
        oidc_roles: Claim value -> role map text (:meth:`medfusion.review.oidc.RoleMap.parse`), or None
            (the hospital login is off).
    """

    results_dir: Path
    model_uri: str | None
    store_path: Path
    users_path: Path
    tracking_uri: str | None = None
    trusted_header: str | None = None
    login_delay_s: float = 1.0
    organization: str = DEFAULT_ORGANIZATION
    stow_url: str | None = None
    store_url: str | None = None

    @property
    def store_location(self) -> str | Path:
        """What :class:`medfusion.review.store.ReviewStore` opens: the PostgreSQL URL or the sqlite file."""
        return self.store_url or self.store_path

    @property
    def store_label(self) -> str:
        """The store for display: the sqlite file's name, or the URL without its password."""
        return redact(self.store_url) if self.store_url else self.store_path.name

    viewer_url_template: str | None = None
    oidc_provider: str | None = None
    oidc_role_claim: str | None = None
    oidc_roles: str | None = None

    def __post_init__(self) -> None:
        if self.viewer_url_template:
            check_viewer_url_template(self.viewer_url_template)

    def viewer_url(self, study_uid: str) -> str | None:
        """The study's "open in PACS viewer" link, or None when no template is set."""
        if not self.viewer_url_template:
            return None
        return self.viewer_url_template.replace("{study_uid}", quote(study_uid, safe=""))

    @classmethod
    def create(
        cls,
        results_dir: str | Path,
        *,
        model_uri: str | None = None,
        store_path: str | Path | None = None,
        users_path: str | Path | None = None,
        tracking_uri: str | None = None,
        trusted_header: str | None = None,
        login_delay_s: float = 1.0,
        organization: str | None = None,
        stow_url: str | None = None,
        viewer_url_template: str | None = None,
        oidc_provider: str | None = None,
        oidc_role_claim: str | None = None,
        oidc_roles: str | None = None,
    ) -> ReviewSettings:
        """Settings with the defaults filled in (store and users file beside the results).

        ``store_path`` may be a ``postgresql://`` URL: it then becomes :attr:`store_url`.
        """
        results = Path(results_dir).resolve()
        store_url = str(store_path) if store_path and is_postgres_url(str(store_path)) else None
        return cls(
            results_dir=results,
            model_uri=model_uri or None,
            store_path=Path(store_path).resolve() if store_path and not store_url else results / "review.sqlite",
            store_url=store_url,
            users_path=Path(users_path).resolve() if users_path else results.parent / "review_users.yaml",
            tracking_uri=tracking_uri or None,
            trusted_header=trusted_header or None,
            login_delay_s=login_delay_s,
            organization=(organization or "").strip() or DEFAULT_ORGANIZATION,
            stow_url=stow_url or None,
            viewer_url_template=viewer_url_template or None,
            oidc_provider=oidc_provider or None,
            oidc_role_claim=oidc_role_claim or None,
            oidc_roles=oidc_roles or None,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReviewSettings:
        """Read the settings ``medfusion review`` put in the environment.

        Raises:
            ConfigError: ``MEDFUSION_REVIEW_RESULTS`` is unset, or the login delay is not a number.
        """
        env = os.environ if env is None else env
        if not env.get(ENV_RESULTS):
            raise ConfigError(
                f"{ENV_RESULTS} is not set: start the app with 'medfusion review' "
                "(or set it to a scoring output folder)"
            )
        try:
            delay = float(env.get(ENV_DELAY, "1.0"))
        except ValueError:
            raise ConfigError(f"{ENV_DELAY}: not a number: {env[ENV_DELAY]!r}") from None
        return cls.create(
            env[ENV_RESULTS],
            model_uri=env.get(ENV_MODEL),
            store_path=env.get(ENV_STORE),
            users_path=env.get(ENV_USERS),
            tracking_uri=env.get(ENV_TRACKING),
            trusted_header=env.get(ENV_HEADER),
            login_delay_s=delay,
            organization=env.get(ENV_ORGANIZATION),
            stow_url=env.get(ENV_STOW),
            viewer_url_template=env.get(ENV_VIEWER_URL),
            oidc_provider=env.get(ENV_OIDC_PROVIDER),
            oidc_role_claim=env.get(ENV_OIDC_CLAIM),
            oidc_roles=env.get(ENV_OIDC_ROLES),
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in the app process."""
        env = {
            ENV_RESULTS: str(self.results_dir),
            ENV_STORE: self.store_url or str(self.store_path),
            ENV_USERS: str(self.users_path),
            ENV_DELAY: str(self.login_delay_s),
            ENV_ORGANIZATION: self.organization,
        }
        for key, value in (
            (ENV_MODEL, self.model_uri),
            (ENV_TRACKING, self.tracking_uri),
            (ENV_HEADER, self.trusted_header),
            (ENV_STOW, self.stow_url),
            (ENV_VIEWER_URL, self.viewer_url_template),
            (ENV_OIDC_PROVIDER, self.oidc_provider),
            (ENV_OIDC_CLAIM, self.oidc_role_claim),
            (ENV_OIDC_ROLES, self.oidc_roles),
        ):
            if value:
                env[key] = value
        return env


def check_viewer_url_template(template: str) -> str:
    """Check an "open in PACS viewer" template: an http(s) URL whose only placeholder is ``{study_uid}``.

    Raises:
        ConfigError: Not http(s), no ``{study_uid}``, or another placeholder.
    """
    try:
        fields = {name for _, name, _, _ in Formatter().parse(template) if name is not None}
    except ValueError:
        fields = {"?"}
    if urlparse(template).scheme not in ("http", "https") or fields != {"study_uid"}:
        raise ConfigError(
            f"viewer URL template {template!r}: expected an http(s) URL with one placeholder {{study_uid}}, "
            "e.g. https://pacs/ohif/viewer?StudyInstanceUIDs={study_uid}"
        )
    return template
