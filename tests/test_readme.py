"""The README's two commands are the project's contract; CI must run the test one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    demo = [b for b in blocks if b.startswith("python3 -m venv") and b.endswith("medfusion demo")]
    tests = [b for b in blocks if b.startswith("python3 -m venv") and b.endswith("pytest")]
    assert len(demo) == 1 and len(tests) == 1
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests[0] in ci, ".ci/run must call the README's test command verbatim"
