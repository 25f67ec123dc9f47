"""Studies from a DICOMweb server (a PACS such as Orthanc, dcm4chee, Google Healthcare API).

:class:`DicomwebSource` is the :class:`~medfusion.scoring.sources.StudySource` for an
``http(s)://`` URL, the DICOMweb root (e.g. ``http://pacs:8042/dicom-web``):

* :meth:`~DicomwebSource.discover` lists studies with QIDO-RS *SearchForStudies*, page by page
  (``limit``/``offset``), so a large archive streams. Each study's AccessionNumber is pseudonymised
  on arrival (:func:`medfusion.privacy.pseudonym`, as :func:`medfusion.ingest.dicom.read.read_dicom_header`
  does for files) and becomes the report key, exactly as for a folder source.
* :meth:`~DicomwebSource.store` sends a file back with STOW-RS (``medfusion score --stow``: the
  DICOM SRs of the results).
* :meth:`~DicomwebSource.materialize` retrieves the study's instances with WADO-RS *RetrieveStudy*
  in their stored transfer syntax (``Accept: multipart/related; type="application/dicom";
  transfer-syntax=*``), streaming one instance at a time, and writes each as a DICOM Part-10 file.
  The files then go through the same header checks as a folder scan
  (:func:`medfusion.ingest.dicom.studies.scan_dicom_folder`), so both sources hand the model the same images.

Credentials come from the arguments, else from ``MEDFUSION_DICOMWEB_USER`` /
``MEDFUSION_DICOMWEB_PASSWORD`` (HTTP basic auth), or from a ready ``requests.Session`` (tokens, client
certificates). They are never logged, printed or put in an error message; credentials inside the URL
are refused.

Network failures are retried a bounded number of times with exponential back-off (connection
errors, timeouts, HTTP 408/429/5xx); then, and for any other HTTP error, an
:class:`~medfusion.errors.InputRejected` names the URL and the reason (never patient data).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pydicom
import pydicom.errors
import requests

from medfusion.errors import InputRejected
from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.privacy import pseudonym
from medfusion.scoring.sources import StudyRef

logger = logging.getLogger(__name__)

USER_ENV = "MEDFUSION_DICOMWEB_USER"
PASSWORD_ENV = "MEDFUSION_DICOMWEB_PASSWORD"
#: HTTP statuses worth another try (the server or a proxy is busy or restarting).
RETRIABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: WADO-RS media type: any transfer syntax, i.e. the one the server stored (no transcoding).
ORIGINAL_TRANSFER_SYNTAX = (("application/dicom", "*"),)
_STUDY_UID_TAG = "0020000D"
_ACCESSION_TAG = "00080050"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_T = TypeVar("_T")


class DicomwebSource:
    """A DICOMweb endpoint as a source of studies to score.

    Args:
        url: DICOMweb root, ``http(s)://host[:port]/path`` (no credentials in it).
        username: HTTP basic-auth user (default: ``$MEDFUSION_DICOMWEB_USER``; none: no auth).
        password: Its password (default: ``$MEDFUSION_DICOMWEB_PASSWORD``).
        session: A configured ``requests.Session`` (auth, certificates, headers) used instead of
            ``username``/``password``.
        timeout: Seconds to wait for the server to connect or send data, per request.
        page_size: Studies per QIDO-RS page.
        max_attempts: Tries per request (1 = no retry).
        backoff_s: Wait before the second try; doubled for each further one.

    Raises:
        InputRejected: The URL is not ``http(s)://`` or carries credentials.
    """

    name = "dicomweb"

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        page_size: int = 500,
        max_attempts: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputRejected(_redacted(url), "not a DICOMweb URL (expected http(s)://host[:port]/path)")
        if parts.username or parts.password:
            raise InputRejected(
                _redacted(url), f"credentials in the URL are refused; set {USER_ENV} and {PASSWORD_ENV} instead"
            )
        if page_size < 1 or max_attempts < 1:
            raise ValueError("page_size and max_attempts must be >= 1")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.page_size = page_size
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._session = session
        if session is None:
            username = username if username is not None else os.environ.get(USER_ENV)
            password = password if password is not None else os.environ.get(PASSWORD_ENV)
        self._auth = (username, password or "") if session is None and username else None
        self._client_cache: Any = None

    def __repr__(self) -> str:
        return f"DicomwebSource({self.url!r}, auth={'yes' if self._auth or self._session else 'no'})"

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes build their own client (and connection pool).
        return {**self.__dict__, "_client_cache": None}

    # ------------------------------------------------------------------------------ discovery

    def discover(self) -> Iterator[StudyRef]:
        """Yield every study of the server, one QIDO-RS page at a time.

        Yields:
            ``StudyRef(study_uid, locator=(), report_key=<accession pseudonym or None>)``, each study
            once (a server that ignores ``offset`` ends the listing instead of looping).

        Raises:
            InputRejected: The server cannot be reached or refuses the search (after retries).
        """
        seen: set[str] = set()
        offset = 0
        while True:

            def search(offset: int = offset) -> list[dict[str, Any]]:
                return self._client().search_for_studies(
                    offset=offset, limit=self.page_size, fields=("StudyInstanceUID", "AccessionNumber")
                )

            page = self._request(f"{self.url}/studies", search)
            fresh = 0
            for item in page:
                study_uid = _first_value(item, _STUDY_UID_TAG)
                if not study_uid or study_uid in seen:
                    continue
                seen.add(study_uid)
                fresh += 1
                accession = _first_value(item, _ACCESSION_TAG)
                yield StudyRef(
                    study_uid=study_uid,
                    locator=(),
                    report_key=pseudonym(accession, kind="acc") if accession else None,
                )
            if not page:
                break
            if not fresh:
                logger.warning("%s/studies repeats studies at offset %d; ending the listing", self.url, offset)
                break
            offset += len(page)
        logger.info("%s: %d study(ies) listed", self.url, len(seen))

    # ------------------------------------------------------------------------------ storage

    def store(self, path: Path) -> None:
        """Send one DICOM Part-10 file to the server with STOW-RS (``POST studies/{uid}``), with the
        same bounded retries as reading. Storing an instance the server already holds (same
        SOPInstanceUID) stores nothing new: the server keeps one copy.

        Raises:
            InputRejected: The file cannot be read, or the server refused the instance (after retries).
        """
        try:
            dataset = pydicom.dcmread(path)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise InputRejected(path, f"cannot read the file to send: {type(exc).__name__}") from None
        study_uid = str(dataset.StudyInstanceUID)
        target = f"{self.url}/studies/{study_uid}"
        response = self._request(
            target, lambda: self._client().store_instances([dataset], study_instance_uid=study_uid)
        )
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            reason = failed[0].get("FailureReason", "unknown")
            raise InputRejected(target, f"the server did not store the instance (STOW-RS failure reason {reason})")

    # ------------------------------------------------------------------------------ retrieval

    def materialize(self, ref: StudyRef, workdir: Path) -> list[Path]:
        """Retrieve a study's instances into ``workdir`` as Part-10 files (stored transfer syntax).

        Args:
            ref: A study from :meth:`discover`.
            workdir: An empty folder for this study (created when missing); the caller deletes it.

        Returns:
            The study's usable image files, in the order of a folder scan (series UID, then
            InstanceNumber). Instances that are not usable images (no pixel data, structured
            reports...) are left out, as a folder scan leaves them out.

        Raises:
            InputRejected: The retrieval failed (after retries), or the study has no usable image.
        """
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        source = f"{self.url}/studies/{ref.study_uid}"
        written = self._request(source, lambda: self._retrieve_study(ref.study_uid, workdir))
        if not written:
            raise InputRejected(source, "the server returned no instance for this study")
        scan = scan_dicom_folder(workdir)
        study = scan.studies.get(ref.study_uid)
        for rejection in scan.rejected:
            logger.info("%s: instance %s left out: %s", source, Path(rejection.source).name, rejection.reason)
        if study is None:
            reasons = "; ".join(sorted({r.reason for r in scan.rejected})) or "no instance of this study"
            raise InputRejected(source, f"no usable image instance ({reasons})")
        return study.paths

    def _retrieve_study(self, study_uid: str, workdir: Path) -> list[Path]:
        """Stream the study's instances to ``workdir``; on failure remove what was written."""
        written: list[Path] = []
        try:
            instances = self._client().iter_study(study_uid, media_types=ORIGINAL_TRANSFER_SYNTAX)
            for index, dataset in enumerate(instances):
                path = workdir / _file_name(dataset, index)
                dataset.save_as(path, enforce_file_format=True)
                written.append(path)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return written

    # ------------------------------------------------------------------------------ plumbing

    def _client(self) -> Any:
        """The ``dicomweb_client.DICOMwebClient`` of this process (built on first use)."""
        if self._client_cache is None:
            from dicomweb_client import DICOMwebClient

            session = self._session
            if session is None:
                session = requests.Session()
                session.auth = self._auth
            client = DICOMwebClient(self.url, session=session, timeout=self.timeout)
            client.set_http_retry_params(retry=False)  # retries are ours (_request), for all failures
            self._client_cache = client
        return self._client_cache

    def _request(self, source: str, call: Callable[[], _T]) -> _T:
        """Run ``call`` with bounded retries; failures become :class:`InputRejected` for ``source``."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return call()
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                reason = _http_reason(status, exc.response)
                if status not in RETRIABLE_STATUS or attempt == self.max_attempts:
                    raise InputRejected(source, _after(reason, attempt)) from None
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                reason = _network_reason(exc)
                if attempt == self.max_attempts:
                    raise InputRejected(source, _after(reason, attempt)) from None
            except (pydicom.errors.InvalidDicomError, ValueError, EOFError) as exc:
                raise InputRejected(source, f"the server sent an unreadable response ({type(exc).__name__})") from None
            delay = self.backoff_s * 2 ** (attempt - 1)
            logger.warning("%s: %s; try %d of %d in %.1f s", source, reason, attempt + 1, self.max_attempts, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")


def _first_value(item: dict[str, Any], tag: str) -> str | None:
    """First value of a DICOM JSON attribute (``{"vr": ..., "Value": [...]}``), stripped, or None."""
    values = (item.get(tag) or {}).get("Value") or []
    text = str(values[0]).strip() if values and values[0] is not None else ""
    return text or None


def _file_name(dataset: pydicom.Dataset, index: int) -> str:
    """``<SOPInstanceUID>.dcm`` when the UID is well formed, else ``instance-<index>.dcm``."""
    sop_uid = str(dataset.get("SOPInstanceUID", "") or "").strip()
    return f"{sop_uid}.dcm" if _UID.match(sop_uid) and len(sop_uid) <= 64 else f"instance-{index:05d}.dcm"


def _http_reason(status: int | None, response: requests.Response | None) -> str:
    if status == 401:
        return f"HTTP 401 Unauthorized: the server refused the credentials (check {USER_ENV} / {PASSWORD_ENV})"
    if status == 403:
        return "HTTP 403 Forbidden: these credentials may not read this resource"
    if status == 404:
        return "HTTP 404 Not Found: no such study, or the URL is not the DICOMweb root (e.g. .../dicom-web)"
    text = (response.reason or "").strip() if response is not None else ""
    return f"HTTP {status} {text}".strip()


def _network_reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out waiting for the server"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection broke during the transfer"
    return "cannot connect to the server"


def _after(reason: str, attempts: int) -> str:
    return reason if attempts == 1 else f"{reason} (after {attempts} attempts)"


def _redacted(url: str) -> str:
    """``url`` without any ``user:password@`` part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()
