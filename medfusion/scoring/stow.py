"""``score --stow URL``: each study's DICOM SR sent to a PACS with DICOMweb STOW-RS when its part commits.

A part's SRs are sent right after the ledger commits the part (:class:`~medfusion.scoring.writer.PartWriter`
``committed``); each send is retried by :meth:`~medfusion.scoring.dicomweb.DicomwebSource.store` (bounded,
exponential back-off) and its outcome recorded in the ledger (``sr_sent``: sent, or failed with the
reason). At start-up the job first re-sends every committed SR not recorded as sent (failed, or the job
was killed between the commit and the send). An SR's SOPInstanceUID is derived from its study and the
model (:func:`medfusion.dicom_sr.write.sr_uids`), so sending it again stores nothing twice: the PACS
keeps one instance per UID.

Credentials come from the environment as for reading (``MEDFUSION_DICOMWEB_USER`` /
``MEDFUSION_DICOMWEB_PASSWORD``); nothing sent is logged (study UIDs and reasons only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from medfusion.errors import InputRejected
from medfusion.scoring.dicomweb import DicomwebSource
from medfusion.scoring.ledger import Ledger

log = logging.getLogger(__name__)


class SrStow:
    """Sends committed SRs and records each outcome in the ledger.

    Args:
        endpoint: The PACS's DICOMweb root (its retries bound each send).
        ledger: The job's ledger.
        sr_dir: The job's ``sr/`` folder (``sr/<part>/<study_uid>.dcm``).
    """

    def __init__(self, endpoint: DicomwebSource, ledger: Ledger, sr_dir: Path) -> None:
        self.endpoint = endpoint
        self.ledger = ledger
        self.sr_dir = sr_dir
        self.sent = 0
        self.failed = 0

    def send(self, part: str, study_uids: Iterable[str]) -> None:
        """Send the SRs of ``study_uids`` from committed part ``part`` (one STOW-RS each)."""
        for uid in study_uids:
            path = self.sr_dir / part / f"{uid}.dcm"
            try:
                if not path.is_file():
                    raise InputRejected(path, "no SR file (the part was scored without --sr)")
                self.endpoint.store(path)
            except InputRejected as exc:
                self.ledger.record_sent(uid, ok=False, reason=exc.reason)
                self.failed += 1
                log.warning("SR of study %s not sent (re-sent by the next run): %s", uid, exc.reason)
                continue
            self.ledger.record_sent(uid, ok=True)
            self.sent += 1

    def resend(self) -> None:
        """Send every committed SR the ledger does not record as sent (an earlier run's leftovers)."""
        leftovers = self.ledger.unsent()
        if leftovers:
            log.info("sending %d SR(s) left unsent by an earlier run", len(leftovers))
        for uid, part in leftovers:
            self.send(part, [uid])
