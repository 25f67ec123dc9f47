"""Shim for ``streamlit run apps/review/app.py``: runs the packaged review page (medfusion/review/app/page.py)."""

import runpy

from medfusion.review.launch import APP_PATH

runpy.run_path(str(APP_PATH), run_name="__main__")
