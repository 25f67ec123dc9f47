"""``python -m tests.robustness``: the robustness suite with the full table of rejection reasons."""

import sys

import pytest

sys.exit(pytest.main(["-q", "-s", "tests/robustness/test_bad_inputs.py"]))
