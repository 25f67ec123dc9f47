"""Pseudonymisation of identifiers that must never leave the process in clear.

Patient names, IDs, birth dates and accession numbers are never written to logs, MLflow or exports.
Where a join key is needed (report <-> study linkage by accession number), both sides are hashed
with :func:`pseudonym` and compared as hashes.
"""

from __future__ import annotations

import hashlib
import os

#: Environment variable holding a site-specific secret salt. Without it a fixed project salt is used,
#: which still hides identifiers from casual readers but is not secret; sites should set it.
SALT_ENV = "MEDFUSION_PSEUDONYM_SALT"
_DEFAULT_SALT = "medfusion-default-salt-v1"


def pseudonym(value: str, *, kind: str = "id") -> str:
    """Return a stable, non-reversible pseudonym for an identifier.

    Args:
        value: The identifier in clear (accession number, patient ID, ...). Leading/trailing
            whitespace is ignored.
        kind: A namespace so that equal strings of different kinds do not collide.

    Returns:
        ``"<kind>-<16 hex chars>"``.
    """
    salt = os.environ.get(SALT_ENV, _DEFAULT_SALT)
    digest = hashlib.sha256(f"{salt}\x00{kind}\x00{value.strip()}".encode()).hexdigest()
    return f"{kind}-{digest[:16]}"
