"""How long the review app takes to open a study, through Streamlit's AppTest (the real page script).

    python benchmarks/review_open.py --model-dir runs/demo/training/<run>/model --config medfusion/configs/demo.yaml

Scores the demo test split with the model (once, into ``--out``), starts the page, signs in, and
times: the worklist after login (the model not loaded yet), then opening the first two studies of
the worklist (the first pays the model load; every study pays only its forward pass and the map and
word evidence shown by default, for the focused label), then reopening the first (cached).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time opening studies in the review app (AppTest).")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument(
        "--config", default="medfusion/configs/demo.yaml", help="the config the model's cohort came from"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/review_open"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch
    from streamlit.testing.v1 import AppTest

    from medfusion.review.auth import add_user
    from medfusion.review.launch import APP_PATH, score_demo_test_split
    from medfusion.review.settings import ReviewSettings
    from medfusion.training.run import resolve_config

    torch.set_num_threads(args.threads)
    results = args.out / "scores"
    if not results.exists():  # scored once; later runs reuse it
        score_demo_test_split(resolve_config(args.config), results, str(args.model_dir.resolve()), "")
    users = args.out / "users.yaml"
    if not users.exists():
        add_user(users, "timer", "timer-password-1", role="reviewer")
    settings = ReviewSettings.create(results, users_path=users, store_path=args.out / "review.sqlite", login_delay_s=0)
    os.environ.update(settings.to_env())

    at = AppTest.from_file(str(APP_PATH), default_timeout=600).run()
    at.text_input(key="login_name").input("timer")
    at.text_input(key="login_password").input("timer-password-1")
    t0 = time.perf_counter()
    at = next(b for b in at.button if b.label == "Sign in").click().run()
    print(f"worklist after login: {time.perf_counter() - t0:.2f} s")
    uids = list(at.dataframe[0].value["study_uid"])
    for n, uid in enumerate([uids[0], uids[1], uids[0]]):
        at.selectbox(key="open_uid").select(uid)
        t0 = time.perf_counter()
        at = at.button(key="open_study").click().run()
        if at.exception:
            print(at.exception, file=sys.stderr)
            return 1
        what = ("first study (loads the model)", "second study", "first study again (cached)")[n]
        print(f"{what}: {time.perf_counter() - t0:.2f} s ({len(at.image)} image(s) shown)")
        at = at.button(key="back").click().run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
