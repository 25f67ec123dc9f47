"""Review store latency on both backends: a study's save (5 labels) and reading its current decisions.

Starts a throwaway PostgreSQL (``tests/support/postgres.py``; Debian ``postgresql`` and the
``postgres`` extra needed; it runs with fsync off, so its saves are not durable and the figures
compare round trips, not disks), then times ``--saves`` sequential saves and 50 reads per backend::

    PYTHONPATH=. python benchmarks/review_store.py --saves 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from medfusion.review.store import Decision, ReviewStore, Shown
from tests.support.postgres import running_postgres


def _decisions(study: int) -> list[Decision]:
    return [
        Decision(f"1.2.{study}", f"label{k}", "agree", "alice", "medfusion", "1", Shown(0.8, 0.5)) for k in range(5)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=200)
    args = parser.parse_args()
    with running_postgres() as pg, tempfile.TemporaryDirectory() as tmp:
        for name, location in (("sqlite", Path(tmp) / "review.sqlite"), ("postgresql", pg.url(pg.create_database()))):
            store = ReviewStore(location)
            started = time.perf_counter()
            for i in range(args.saves):
                store.record_many(_decisions(i))
            save_ms = (time.perf_counter() - started) / args.saves * 1000
            started = time.perf_counter()
            for i in range(50):
                store.current(f"1.2.{i}")
            read_ms = (time.perf_counter() - started) / 50 * 1000
            print(f"{name:10s} save (5 labels): {save_ms:6.1f} ms   current(study): {read_ms:5.1f} ms")


if __name__ == "__main__":
    main()
