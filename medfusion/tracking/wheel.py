"""The medfusion wheel a logged model ships with, and the model's pip requirements.

A logged model must load in a fresh environment built from its own ``requirements.txt``. medfusion is
not on a public index (and a same-named package there would be someone else's), so the model carries
the exact medfusion code that trained it as a wheel artifact, and its requirements name that wheel by
a path relative to the model folder, next to the trained versions of medfusion's direct dependencies.

Where the wheel comes from: :func:`pack_running_package` packs the *imported* ``medfusion`` package
(its files on disk, whether installed from a wheel, installed editable or on ``PYTHONPATH``) with the
installed distribution's metadata (version, dependencies, the ``medfusion`` console script). That is
the code that produced the weights, byte for byte; it needs no build backend, no git and no network at
training time, and takes well under a second. The archive is reproducible (sorted entries, fixed
timestamps), so its SHA-256 identifies the code: :func:`source_digest` is logged with the model.

Pins: every direct runtime dependency of medfusion is pinned to the version that trained the model,
without a local label (``torch==2.13.0``, not ``2.13.0+cpu``): pip then prefers the local build where one
is on the machine (``2.13.0+cpu`` sorts above ``2.13.0``) and a GPU host installs its own build of the
same release.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from importlib import metadata
from pathlib import Path

from medfusion.errors import MedfusionError

DIST = "medfusion"
#: Model artifact key of the wheel; MLflow stores it at ``<model>/artifacts/<wheel file name>``.
WHEEL_ARTIFACT = "medfusion_wheel"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: reproducible archives


def package_files() -> list[tuple[str, Path]]:
    """The imported medfusion package's files as ``(archive name, path)``, sorted.

    Byte-code caches and hidden files are left out; everything else in the package folder (modules,
    the shipped configs, the review page) goes in, as a wheel built from the source would hold it.
    """
    import medfusion

    root = Path(medfusion.__file__).resolve().parent
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if not path.is_file() or path.suffix in (".pyc", ".pyo"):
            continue
        if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
            continue
        files.append((f"{DIST}/{rel.as_posix()}", path))
    return sorted(files)


def source_digest() -> str:
    """SHA-256 over the package files' names and bytes: which code trained a model."""
    digest = hashlib.sha256()
    for name, path in package_files():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _distribution() -> metadata.Distribution:
    """The installed medfusion's metadata: an installed ``.dist-info`` (with ``METADATA``) before a
    source tree's ``medfusion.egg-info`` (``PKG-INFO`` only), which ``importlib.metadata`` finds first
    whenever the checkout is the working directory."""
    found = list(metadata.distributions(name=DIST))
    found.sort(key=lambda d: not d.read_text("METADATA"))
    if found:
        return found[0]
    try:
        return metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        raise MedfusionError(
            "medfusion is importable but not installed (no package metadata): install it "
            "(pip install -e . in the checkout, or pip install the wheel) to log a model"
        ) from None


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def pack_running_package(dest: Path) -> Path:
    """Write the running medfusion code as an installable wheel into ``dest``.

    Args:
        dest: Folder to write ``medfusion-<version>-py3-none-any.whl`` into (created if missing).

    Returns:
        The wheel's path.

    Raises:
        MedfusionError: medfusion has no installed metadata (see :func:`_distribution`).
    """
    dist = _distribution()
    version = dist.version
    info = f"{DIST}-{version}.dist-info"
    members: list[tuple[str, bytes]] = [(name, path.read_bytes()) for name, path in package_files()]
    meta = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    if not meta:
        raise MedfusionError(f"the installed {DIST} {version} has no METADATA file")
    members.append((f"{info}/METADATA", meta.encode()))
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        members.append((f"{info}/entry_points.txt", entry_points.encode()))
    wheel_file = "Wheel-Version: 1.0\nGenerator: medfusion.tracking.wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    members.append((f"{info}/WHEEL", wheel_file.encode()))
    members.append((f"{info}/top_level.txt", f"{DIST}\n".encode()))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in members)
    members.append((f"{info}/RECORD", (record + f"{info}/RECORD,,\n").encode()))

    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{DIST}-{version}-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            entry = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    wheel.write_bytes(buffer.getvalue())
    return wheel


def pinned_dependencies() -> list[str]:
    """medfusion's direct runtime dependencies, each pinned to its installed version (public part).

    A dependency that is not installed keeps the range the metadata gives (it was not used to train).
    """
    from packaging.requirements import Requirement
    from packaging.version import Version

    pins = []
    for line in _distribution().requires or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra's dependency (ray, dev, ...) or another platform's
        try:
            installed = Version(metadata.version(req.name)).public
        except metadata.PackageNotFoundError:
            pins.append(str(req))
            continue
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        pins.append(f"{req.name}{extras}=={installed}")
    return pins


def model_requirements(wheel_name: str) -> list[str]:
    """The logged model's pip requirements: its own medfusion wheel, then the trained dependency versions.

    Args:
        wheel_name: File name of the wheel shipped under the model's ``artifacts/`` folder.

    Install them from the model folder (relative paths in a requirements file are relative to the
    working directory): ``cd <model> && pip install -r requirements.txt``; MLflow's own environment
    managers (``mlflow models serve --env-manager virtualenv``) do the same.
    """
    return [f"artifacts/{wheel_name}", *pinned_dependencies()]
