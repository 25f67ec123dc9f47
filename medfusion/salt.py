"""The pseudonym salt of this site: one function, :func:`resolve_salt`, decides it for every pseudonym.

So that build-manifest, training, scoring (and its worker processes, which inherit the environment)
and the review app of one site agree, the salt comes, in order, from:

1. inside :func:`demo_salt` (the synthetic demo cohort only): the public :data:`PUBLIC_SALT`;
2. ``MEDFUSION_PSEUDONYM_SALT``, the site's secret, when set (the public salt there only with
   ``MEDFUSION_ALLOW_PUBLIC_SALT=1``);
3. the site salt file (:func:`site_salt_path`: ``$MEDFUSION_SALT_FILE``, else
   ``$MEDFUSION_HOME/site_salt``, else ``~/.config/medfusion/site_salt``), created with a random salt
   (mode 0600, its location logged once) on first use, and refused when group or others may read it.

The salt itself is never logged or written anywhere else.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from medfusion.errors import SiteSaltError

log = logging.getLogger(__name__)

#: Environment variable holding the site's secret salt; takes precedence over the salt file.
SALT_ENV = "MEDFUSION_PSEUDONYM_SALT"
#: Environment variable naming the site salt file.
SALT_FILE_ENV = "MEDFUSION_SALT_FILE"
#: Folder of medfusion's per-site state: the salt file defaults to ``$MEDFUSION_HOME/site_salt``.
HOME_ENV = "MEDFUSION_HOME"
#: Set to ``1`` to accept :data:`PUBLIC_SALT` in ``MEDFUSION_PSEUDONYM_SALT`` (e.g. to keep linking to
#: manifests that older versions built with it).
ALLOW_PUBLIC_SALT_ENV = "MEDFUSION_ALLOW_PUBLIC_SALT"
#: The public salt: it is printed here, so it hides identifiers from nobody who has the code. Used for the
#: synthetic demo cohort (its splits stay the same on every machine); elsewhere only on explicit request.
PUBLIC_SALT = "medfusion-default-salt-v1"
#: Name of the salt file under ``$MEDFUSION_HOME`` or ``~/.config/medfusion``.
SALT_FILE_NAME = "site_salt"
#: Random bytes of a new site salt (written as hex).
SALT_BYTES = 32
#: Shortest salt accepted from a salt file (a site may write its own secret there).
MIN_SALT_CHARS = 32
_MAX_SALT_FILE_BYTES = 4096
_EMPTY_FILE_WAIT_S = 2.0  # a creator without hard links writes the file in place: wait for its one write

_in_demo: ContextVar[bool] = ContextVar("medfusion_demo_salt", default=False)
_lock = threading.Lock()
_file_salts: dict[Path, str] = {}  # salt file -> salt, read once per process
_warned_public = False


@contextmanager
def demo_salt() -> Iterator[None]:
    """Pseudonymise with :data:`PUBLIC_SALT` inside this block (this thread or task only).

    Only for the synthetic demo cohort (:func:`medfusion.datasets.demo.cohort.generate_demo_cohort`): its
    patients are invented, and a fixed salt gives the same patient-level splits, hence the same
    figures, on every machine. Never use it for real data.
    """
    token = _in_demo.set(True)
    try:
        yield
    finally:
        _in_demo.reset(token)


def site_salt_path() -> Path:
    """The site salt file: ``$MEDFUSION_SALT_FILE``, else ``$MEDFUSION_HOME/site_salt``, else
    ``${XDG_CONFIG_HOME:-~/.config}/medfusion/site_salt``.

    Raises:
        SiteSaltError: None of these can be found (no home folder).
    """
    if os.environ.get(SALT_FILE_ENV):
        return Path(os.environ[SALT_FILE_ENV]).expanduser()
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser() / SALT_FILE_NAME
    try:
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config").expanduser()
    except RuntimeError:
        raise SiteSaltError(f"no home folder to keep the site pseudonym salt in; set {SALT_FILE_ENV}") from None
    return config_home / "medfusion" / SALT_FILE_NAME


def resolve_salt() -> str:
    """The salt of every pseudonym this thread makes (see the order above). Never logged.

    Raises:
        SiteSaltError: ``MEDFUSION_PSEUDONYM_SALT`` is empty, or is the public salt without
            ``MEDFUSION_ALLOW_PUBLIC_SALT=1``; or the salt file cannot be created or read, is
            readable by others, or holds no usable salt. The message names the source, never the salt.
    """
    if _in_demo.get():
        return PUBLIC_SALT
    explicit = os.environ.get(SALT_ENV)
    if explicit is not None:
        return _checked_env_salt(explicit)
    path = site_salt_path()
    with _lock:  # one reader or creator per process; other processes are handled by the file itself
        salt = _file_salts.get(path)
        if salt is None:
            salt = _file_salts[path] = _read_or_create(path)
    return salt


def _checked_env_salt(value: str) -> str:
    global _warned_public
    if not value.strip():
        raise SiteSaltError(f"{SALT_ENV} is set but empty; unset it to use the site salt file ({site_salt_path()})")
    if value.strip() == PUBLIC_SALT:
        if os.environ.get(ALLOW_PUBLIC_SALT_ENV) != "1":
            raise SiteSaltError(
                f"{SALT_ENV} is the public salt published in medfusion's source, which hides identifiers from "
                f"nobody; unset it to use this site's own salt file ({site_salt_path()}), or set "
                f"{ALLOW_PUBLIC_SALT_ENV}=1 to use it on purpose"
            )
        if not _warned_public:
            log.warning(
                "pseudonyms use the public salt (%s=1): they can be reversed by guessing", ALLOW_PUBLIC_SALT_ENV
            )
            _warned_public = True
    return value


def _read_or_create(path: Path) -> str:
    """The salt in ``path``; a new random one written there first when the file does not exist."""
    try:
        return _read_salt_file(path)
    except FileNotFoundError:
        pass
    if _create_salt_file(path):
        log.warning(
            "created this site's pseudonym salt file %s (mode 0600). Keep it and back it up: every pseudonym "
            "(manifests, scores, exports) depends on it, and every medfusion process of this site must read it "
            "(%s or %s name its place)",
            path, SALT_FILE_ENV, HOME_ENV,
        )  # fmt: skip
    return _read_salt_file(path)  # ours, or the one another process created first


def _create_salt_file(path: Path) -> bool:
    """Write a new random salt to ``path`` unless a salt file appears there first; True if ours won.

    Race-safe across processes: the salt is written and synced to a private temporary file (``O_CREAT |
    O_EXCL``, mode 0600) that is then hard-linked to ``path``, which is atomic and never replaces a file
    that exists, so every process ends up reading the same, complete salt. Where hard links are not
    supported, ``path`` itself is created with ``O_EXCL`` and written in one call (readers wait for it).
    """
    salt = (secrets.token_hex(SALT_BYTES) + "\n").encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(tmp, salt)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system
            try:
                _write_new(path, salt)
                return True
            except FileExistsError:
                return False
    except OSError as exc:
        raise SiteSaltError(
            f"{path}: cannot create the site pseudonym salt: {exc.strerror or type(exc).__name__}; set "
            f"{SALT_FILE_ENV} to a writable place (or {SALT_ENV} to the site's secret)"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (which must not exist) with mode 0600 and write ``data`` to it durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _read_salt_file(path: Path) -> str:
    """The salt in an existing salt file.

    Raises:
        FileNotFoundError: There is no file at ``path``.
        SiteSaltError: It is not a regular file, is readable or writable by group or others, is too
            large, not text, or holds fewer than :data:`MIN_SALT_CHARS` characters.
    """
    deadline = time.monotonic() + _EMPTY_FILE_WAIT_S
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block us
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise SiteSaltError(
                f"{path}: cannot read the site pseudonym salt: {exc.strerror}; "
                f"set {SALT_FILE_ENV} to the site's salt file"
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SiteSaltError(f"{path}: the site pseudonym salt must be a regular file")
            if os.name == "posix" and info.st_mode & 0o077:
                raise SiteSaltError(
                    f"{path}: the site pseudonym salt is open to group or others (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}); run 'chmod 600 {path}' if no one else has read it, "
                    "else replace the salt"
                )
            data = os.read(fd, _MAX_SALT_FILE_BYTES + 1)
        finally:
            os.close(fd)
        if data or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # being written by a creator without hard links
    if len(data) > _MAX_SALT_FILE_BYTES:
        raise SiteSaltError(f"{path}: not a salt file (more than {_MAX_SALT_FILE_BYTES} bytes)")
    try:
        salt = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SiteSaltError(f"{path}: not a salt file (not ASCII text)") from None
    if len(salt) < MIN_SALT_CHARS:
        raise SiteSaltError(
            f"{path}: the site pseudonym salt is too short ({len(salt)} characters, at least {MIN_SALT_CHARS})"
        )
    return salt
