"""What a worklist click costs on a large scoring output: server time and what is sent to the browser.

    python benchmarks/review_worklist.py --scores runs/review_open/scores --studies 50000

Copies a scoring output (``--scores``: one made by ``benchmarks/review_open.py`` or ``medfusion
score``) and grows it to ``--studies`` studies (its rows repeated with new UIDs and random
probabilities, one committed part), then drives the real page with Streamlit's AppTest: signs in
(a reviewer), times the worklist after login and two reruns (a filter changed, then none), and
prints the size of the worklist table element (Arrow bytes in the page's message) and the number
of options of the study box: what each click sends to the browser.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def _grow(scores: Path, out: Path, studies: int) -> None:
    """``scores`` copied to ``out`` with its one result part grown to ``studies`` rows."""
    import numpy as np
    import pandas as pd

    shutil.copytree(scores, out, ignore=shutil.ignore_patterns("review.sqlite*", "score.lock"))
    (part,) = sorted((out / "results").glob("part-*.parquet"))
    rows = pd.read_parquet(part)
    grown = rows.sample(studies, replace=True, random_state=0).reset_index(drop=True)
    grown["study_uid"] = [f"2.25.{10**30 + i}" for i in range(studies)]
    rng = np.random.default_rng(0)
    for column in [c for c in grown.columns if c.startswith("prob_")]:
        grown[column] = rng.random(studies)
    grown.to_parquet(part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scores", type=Path, required=True, help="a scoring output to grow")
    parser.add_argument("--studies", type=int, default=50_000)
    args = parser.parse_args()
    from review_open import PASSWORD, USER, time_worklist  # this folder: run as benchmarks/review_worklist.py
    from streamlit.testing.v1 import AppTest

    from medfusion.review.auth import add_user
    from medfusion.review.launch import APP_PATH
    from medfusion.review.settings import ReviewSettings

    with tempfile.TemporaryDirectory() as tmp:
        scores = Path(tmp) / "scores"
        _grow(args.scores, scores, args.studies)
        users = Path(tmp) / "users.yaml"
        add_user(users, USER, PASSWORD, role="reviewer")
        settings = ReviewSettings.create(
            scores, users_path=users, store_path=Path(tmp) / "review.sqlite", login_delay_s=0
        )
        os.environ.update(settings.to_env())
        print(f"scored studies: {args.studies}")
        at = time_worklist(AppTest.from_file(str(APP_PATH), default_timeout=600).run())
        started = time.perf_counter()
        at = at.run()
        print(f"worklist rerun: {time.perf_counter() - started:.2f} s")
        table = at.dataframe[0]
        print(
            f"sent per click: worklist table {len(table.value)} rows, {table.proto.ByteSize() / 1e6:.2f} MB; "
            f"study box {len(at.selectbox(key='open_uid').options)} options"
        )


if __name__ == "__main__":
    main()
