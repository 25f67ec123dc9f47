"""Run each input through a medfusion reader in a child process with a time bound and a memory probe.

Every input must end one of two ways, within its time bound:

* **handled**: the reader returned a result (an image, a batch of reports, a config);
* **rejected**: the reader raised our typed error (:class:`~medfusion.errors.InputRejected` naming
  the file, or :class:`~medfusion.errors.ConfigError` whose message starts with the file).

An input that takes longer than its bound is **hung**, whatever it returned at last (a child still
busy at :data:`TIME_LIMIT_S` is killed). Anything else is **crashed**: another exception type, a
typed error that does not name the file or gives no reason, or a child that dies.

The child is forked once and reused (forking is cheap and torch/pydicom are already imported); it is
replaced after a timeout or a death. Peak memory growth of each input is measured in the child from
``/proc/self/status`` (``VmHWM`` is reset before each input through ``/proc/self/clear_refs``),
falling back to ``ru_maxrss`` where that is not allowed.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Per-input bound on wall time, seconds (the slowest corpus file takes ~2 s on a busy 2-core box).
TIME_LIMIT_S = 30.0

HANDLED, REJECTED, CRASHED, HUNG = "handled", "rejected", "crashed", "hung"


@dataclass(frozen=True)
class Outcome:
    """How one input ended.

    Attributes:
        case: A stable name of the input (``family/variant``).
        status: ``handled``, ``rejected``, ``crashed`` or ``hung``.
        detail: The rejection reason, or ``ExceptionType: message`` for a crash, or what ran over.
        seconds: Wall time in the child.
        peak_growth_mb: Peak resident memory growth while reading it, MiB.
    """

    case: str
    status: str
    detail: str
    seconds: float
    peak_growth_mb: float


# ------------------------------------------------------------------------------------------ readers


def _names_file(source: str, path: Path) -> bool:
    """``source`` is the file itself, a locator inside it (``file:line 3``, ``file#entry 2``), or a
    file inside it (an input that is a folder)."""
    return source == str(path) or source.startswith((f"{path}:", f"{path}#", f"{path}/"))


def _read_dicom(path: Path) -> tuple[str, str]:
    import torch

    from medfusion.errors import DicomReadError
    from medfusion.ingest.dicom.read import read_dicom, read_dicom_header

    # The header reader must also end cleanly; anything but DicomReadError propagates as a crash.
    with contextlib.suppress(DicomReadError):
        read_dicom_header(path)
    image = read_dicom(path)
    pixels = image.pixels  # (frames, channels, rows, cols) float32 in [0, 1]
    if (
        pixels.dtype != torch.float32
        or pixels.ndim != 4
        or pixels.shape[1] not in (1, 3)
        or not bool(pixels.isfinite().all())
        or float(pixels.min()) < 0
        or float(pixels.max()) > 1
    ):
        return CRASHED, f"invalid image {pixels.dtype} {tuple(pixels.shape)}"
    return HANDLED, f"{tuple(pixels.shape)}"


def _read_dicom_header(path: Path) -> tuple[str, str]:
    from medfusion.ingest.dicom.read import read_dicom_header

    meta = read_dicom_header(path)
    return HANDLED, f"{meta.get('rows')}x{meta.get('columns')}"


def _read_reports(path: Path) -> tuple[str, str]:
    from medfusion.ingest.reports.read import read_reports

    batch = read_reports(path)
    for rejection in batch.rejected:
        if not _names_file(rejection.source, path) or not rejection.reason:
            return CRASHED, f"rejection does not name the file or a reason: {rejection}"
    if not batch.reports and batch.rejected:
        return REJECTED, batch.rejected[0].reason
    return HANDLED, f"{len(batch.reports)} report(s), {len(batch.rejected)} rejected record(s)"


def _read_fhir_string(path: Path) -> tuple[str, str]:
    """The pyfunc's ``fhir_report`` column path: one JSON document given as a string."""
    from medfusion.fhir.read import report_from_fhir_json

    source = f"{path}:fhir_report"
    report_from_fhir_json(path.read_bytes(), source=source)
    return HANDLED, "1 report"


def _load_config(path: Path) -> tuple[str, str]:
    from medfusion.config import load_config

    config = load_config(path)
    return HANDLED, config.name


def _read_study_folder(path: Path) -> tuple[str, str]:
    """A folder of one study's files, as a scoring worker reads it: the copy of each instance that
    decodes, then every kept file decoded. Detail: the names kept and the number set aside."""
    from medfusion.ingest.dicom.read import read_dicom
    from medfusion.ingest.dicom.studies import resolve_copies, scan_dicom_folder

    scan = scan_dicom_folder(path)
    kept_names, set_aside = [], 0
    for study in scan.studies.values():
        kept, aside = resolve_copies(study.paths, read_dicom)
        for file in kept:
            read_dicom(file)  # raises DicomReadError (naming the file) when no copy decodes
        kept_names += sorted(p.name for p in kept)
        set_aside += len(aside)
    if not kept_names:
        return REJECTED, "; ".join(sorted({r.reason for r in scan.rejected})) or "no image"
    return HANDLED, f"kept {','.join(kept_names)}; {set_aside} set aside"


#: Seconds each header read may take in :func:`_discover` (the child reading it is stopped beyond).
DISCOVERY_FILE_TIMEOUT_S = 5.0


def _discover(path: Path) -> tuple[str, str]:
    """Discovery of a folder with time-bounded header reads (as the scoring folder source runs it)."""
    from medfusion.ingest.dicom.studies import scan_dicom_folder

    scan = scan_dicom_folder(path, file_timeout_s=DISCOVERY_FILE_TIMEOUT_S)
    if scan.rejected and not scan.studies:
        return REJECTED, scan.rejected[0].reason
    reasons = "; ".join(r.reason for r in scan.rejected) or "none"
    return HANDLED, f"{scan.n_instances} image(s); rejected: {reasons}"


READERS = {
    "dicom": _read_dicom,
    "dicom_header": _read_dicom_header,
    "reports": _read_reports,
    "fhir_string": _read_fhir_string,
    "config": _load_config,
    "study_folder": _read_study_folder,
    "discover": _discover,
}


def classify(kind: str, path: Path) -> tuple[str, str]:
    """Run one reader on one input and classify the outcome (never raises)."""
    from medfusion.errors import ConfigError, InputRejected

    try:
        return READERS[kind](path)
    except InputRejected as exc:
        source = exc.source.removesuffix(":fhir_report")
        if not _names_file(source, path):
            return CRASHED, f"{type(exc).__name__} names {exc.source!r}, not the file"
        if not exc.reason or "\n" in exc.reason:
            return CRASHED, f"{type(exc).__name__} without a one-line reason: {exc.reason!r}"
        return REJECTED, exc.reason
    except ConfigError as exc:
        if not str(exc).startswith(str(path)):
            return CRASHED, f"ConfigError does not name the file: {str(exc)[:200]}"
        return REJECTED, str(exc).splitlines()[0][len(str(path)) + 2 :][:200]
    except BaseException as exc:  # noqa: BLE001 - counting crashes is the point
        return CRASHED, f"{type(exc).__name__}: {str(exc)[:300]}"


# ------------------------------------------------------------------------------------------- memory


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise LookupError(field_name)


def _measure(kind: str, path: Path) -> tuple[str, str, float, float]:
    if _reset_peak():
        before = _status_kb("VmRSS")
        start = time.perf_counter()
        status, detail = classify(kind, path)
        seconds = time.perf_counter() - start
        growth_kb = _status_kb("VmHWM") - before
    else:  # ru_maxrss only grows: this under-reports after an earlier, bigger input
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        status, detail = classify(kind, path)
        seconds = time.perf_counter() - start
        growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return status, detail, seconds, max(0, growth_kb) / 1024


def _child(conn: Any) -> None:
    import torch

    torch.set_num_threads(1)
    while True:
        task = conn.recv()
        if task is None:
            return
        kind, path = task
        conn.send(_measure(kind, Path(path)))


# ------------------------------------------------------------------------------------------- runner


@dataclass
class Tally:
    """Outcomes of a family of inputs."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(o.status for o in self.outcomes)
        return {
            "tried": len(self.outcomes),
            HANDLED: c[HANDLED],
            REJECTED: c[REJECTED],
            CRASHED: c[CRASHED],
            HUNG: c[HUNG],
        }

    def by_case(self) -> dict[str, Outcome]:
        return {o.case: o for o in self.outcomes}

    def format(self, title: str) -> str:
        c = self.counts
        slowest = max(self.outcomes, key=lambda o: o.seconds, default=None)
        biggest = max(self.outcomes, key=lambda o: o.peak_growth_mb, default=None)
        lines = [
            f"{title}: {c['tried']} inputs tried, {c[HANDLED]} handled, {c[REJECTED]} rejected, {c[CRASHED]} crashed, "
            f"{c[HUNG]} hung"
            + (f"; slowest {slowest.seconds:.2f}s ({slowest.case})" if slowest else "")
            + (f"; largest peak RSS growth {biggest.peak_growth_mb:.0f} MiB ({biggest.case})" if biggest else "")
        ]
        reasons = Counter(o.detail for o in self.outcomes if o.status == REJECTED)
        for reason, n in reasons.most_common(8):
            lines.append(f"  {n:4d} rejected: {reason[:150]}")
        for o in self.outcomes:
            if o.status in (CRASHED, HUNG):
                lines.append(f"  {o.status.upper()} {o.case}: {o.detail}")
        return "\n".join(lines)


class BoundedRunner:
    """Reads inputs in a forked child, killing and replacing it when one input exceeds ``time_limit_s``."""

    def __init__(self, time_limit_s: float = TIME_LIMIT_S, *, daemon: bool = True) -> None:
        self.time_limit_s = time_limit_s
        self.daemon = daemon  # False for readers that start processes of their own
        self._ctx = mp.get_context("fork")
        self._proc: Any = None
        self._conn: Any = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_child, args=(child,), daemon=self.daemon)
        self._proc.start()
        child.close()
        self._conn = parent

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
            self._conn.close()
        self._proc = self._conn = None

    def run(self, kind: str, path: Path, case: str, bound_s: float | None = None) -> Outcome:
        """Read ``path`` with reader ``kind``: a death is ``crashed``; more than ``bound_s`` (default
        and at most :attr:`time_limit_s`, where the child is killed) is ``hung``."""
        bound = min(bound_s or self.time_limit_s, self.time_limit_s)
        if self._proc is None or not self._proc.is_alive():
            self._start()
        start = time.perf_counter()
        self._conn.send((kind, str(path)))
        if not self._conn.poll(self.time_limit_s):
            self._kill()
            return Outcome(case, HUNG, f"no result within {self.time_limit_s:.0f}s (killed)", self.time_limit_s, 0.0)
        try:
            status, detail, seconds, growth = self._conn.recv()
        except EOFError:
            code = self._proc.exitcode if self._proc is not None else None
            self._kill()
            return Outcome(case, CRASHED, f"reader process died (exit code {code})", time.perf_counter() - start, 0.0)
        if seconds > bound:
            return Outcome(case, HUNG, f"{seconds:.1f}s > bound {bound:g}s ({status}: {detail})", seconds, growth)
        return Outcome(case, status, detail, seconds, growth)

    def run_all(self, kind: str, inputs: list[tuple[str, Path]], bound_s: float | None = None) -> Tally:
        """Run every ``(case, path)``, each bounded by ``bound_s`` (see :meth:`run`); never raises for an input."""
        tally = Tally()
        for case, path in inputs:
            tally.outcomes.append(self.run(kind, path, case, bound_s))
        return tally

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(5)
            except OSError:
                pass
        self._kill()

    def __enter__(self) -> BoundedRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


#: Title -> tally of every family run in this process (printed in pytest's terminal summary).
RESULTS: dict[str, Tally] = {}


def report_line(title: str, tally: Tally) -> str:
    """One summary block, kept in :data:`RESULTS` and appended to ``$MEDFUSION_ROBUSTNESS_REPORT`` if set."""
    RESULTS[title] = tally
    text = tally.format(title)
    target = os.environ.get("MEDFUSION_ROBUSTNESS_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return text
