"""How long the review app takes to open a study, through Streamlit's AppTest (the real page script).

    python benchmarks/review_open.py --model-dir runs/demo/training/<run>/model --config medfusion/configs/demo.yaml

Scores the demo test split with the model (once, into ``--out``), starts the page, signs in, and
times: in a fresh process (what the first visitor after a restart waits for) the login page, the worklist
after login and the first study opened; then in this process the worklist after login, a worklist
rerun (a filter changed: what every click
costs), then opening the first two studies of the worklist (the first pays the model load; every
study pays only its forward pass and the map and word evidence shown by default, for the focused
label), then reopening the first (cached).

``--reviewed N`` first fills the review store with N reviewed studies (5 labels each, UIDs outside
this scoring output, as a department's store holds after months of review), so the figures show
what a click costs once the store has grown::

    python benchmarks/review_open.py --model-dir ... --reviewed 4000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

    from medfusion.review.store import ReviewStore

#: The reviewer the review benchmarks sign in as (``benchmarks/review_worklist.py`` too).
USER, PASSWORD = "timer", "timer-password-1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time opening studies in the review app (AppTest).")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument(
        "--config", default="medfusion/configs/demo.yaml", help="the config the model's cohort came from"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/review_open"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reviewed", type=int, default=0, help="reviewed studies already in the store")
    args = parser.parse_args(argv)
    import torch
    from streamlit.testing.v1 import AppTest

    from medfusion.review.auth import add_user
    from medfusion.review.launch import APP_PATH, score_demo_test_split
    from medfusion.review.settings import ReviewSettings
    from medfusion.review.store import ReviewStore
    from medfusion.training.run import resolve_config

    torch.set_num_threads(args.threads)
    results = args.out / "scores"
    if not results.exists():  # scored once; later runs reuse it
        score_demo_test_split(resolve_config(args.config), results, str(args.model_dir.resolve()), "")
    users = args.out / "users.yaml"
    if not users.exists():
        add_user(users, USER, PASSWORD, role="reviewer")
    store_path = args.out / f"review_{args.reviewed}.sqlite"
    store_path.unlink(missing_ok=True)
    _fill(ReviewStore(store_path), args.reviewed)
    settings = ReviewSettings.create(results, users_path=users, store_path=store_path, login_delay_s=0)
    os.environ.update(settings.to_env())

    print(f"store: {args.reviewed} reviewed studies")
    _fresh_process(APP_PATH)
    at = time_worklist(AppTest.from_file(str(APP_PATH), default_timeout=600).run())
    at = at.checkbox(key="f_positive").uncheck().run()
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
        if n == 2:
            t0 = time.perf_counter()
            at = at.run()
            print(f"study rerun: {time.perf_counter() - t0:.2f} s")
        at = at.button(key="back").click().run()
    return 0


def sign_in(at: AppTest) -> tuple[AppTest, float]:
    """Sign in as :data:`USER` on the login page ``at``; the app after the login's run, and its seconds."""
    at.text_input(key="login_name").input(USER)
    at.text_input(key="login_password").input(PASSWORD)
    started = time.perf_counter()
    at = next(b for b in at.button if b.label == "Sign in").click().run()
    return at, time.perf_counter() - started


def time_worklist(at: AppTest) -> AppTest:
    """Sign in on the login page ``at``, then turn the *positive calls only* filter on; prints the
    seconds of both runs and returns the app (the filter on)."""
    at, seconds = sign_in(at)
    print(f"worklist after login: {seconds:.2f} s")
    started = time.perf_counter()
    at = at.checkbox(key="f_positive").check().run()
    print(f"worklist rerun (a filter changed): {time.perf_counter() - started:.2f} s")
    return at


#: A new interpreter (Streamlit imported) times the login page, the worklist after login and the
#: first study opened: what the first visitor after a server restart waits for.
_FRESH = """
import sys, time
from streamlit.testing.v1 import AppTest
sys.path.insert(0, sys.argv[2])
from review_open import sign_in
t = time.perf_counter()
at = AppTest.from_file(sys.argv[1], default_timeout=600).run()
print("login page", time.perf_counter() - t)
at, seconds = sign_in(at)
print("worklist after login", seconds)
at.selectbox(key="open_uid").select(at.dataframe[0].value["study_uid"].iloc[0])
t = time.perf_counter()
at = at.button(key="open_study").click().run()
assert not at.exception, at.exception
print("first study (imports, loads the model)", time.perf_counter() - t)
"""


def _fresh_process(app: Path) -> None:
    """Print :data:`_FRESH`'s three figures."""
    here = str(Path(__file__).resolve().parent)
    out = subprocess.run([sys.executable, "-c", _FRESH, str(app), here], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        what, _, seconds = line.rpartition(" ")
        print(f"fresh process, {what}: {float(seconds):.2f} s")


def _fill(store: ReviewStore, studies: int) -> None:
    """``studies`` reviewed studies (5 labels each, one save per study) in ``store``."""
    from medfusion.review.store import Decision, Shown

    for i in range(studies):
        store.record_many(
            [
                Decision(f"2.25.{i}", label, "agree", USER, "medfusion", "1", Shown(0.7, 0.5))
                for label in ("atelectasis", "cardiomegaly", "consolidation", "edema", "effusion")
            ]
        )


if __name__ == "__main__":
    raise SystemExit(main())
