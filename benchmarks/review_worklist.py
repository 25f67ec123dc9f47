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
    from streamlit.testing.v1 import AppTest

    from medfusion.review.auth import add_user
    from medfusion.review.launch import APP_PATH
    from medfusion.review.settings import ReviewSettings

    with tempfile.TemporaryDirectory() as tmp:
        scores = Path(tmp) / "scores"
        _grow(args.scores, scores, args.studies)
        users = Path(tmp) / "users.yaml"
        add_user(users, "timer", "timer-password-1", role="reviewer")
        settings = ReviewSettings.create(
            scores, users_path=users, store_path=Path(tmp) / "review.sqlite", login_delay_s=0
        )
        os.environ.update(settings.to_env())
        at = AppTest.from_file(str(APP_PATH), default_timeout=600).run()
        at.text_input(key="login_name").input("timer")
        at.text_input(key="login_password").input("timer-password-1")
        started = time.perf_counter()
        at = next(b for b in at.button if b.label == "Sign in").click().run()
        print(f"scored studies: {args.studies}")
        print(f"worklist after login: {time.perf_counter() - started:.2f} s")
        started = time.perf_counter()
        at = at.checkbox(key="f_positive").check().run()
        print(f"worklist rerun (a filter changed): {time.perf_counter() - started:.2f} s")
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
