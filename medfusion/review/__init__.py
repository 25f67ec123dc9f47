"""The radiologist review side: decision store with audit trail, login, worklist, label export.

The Streamlit app (``apps/review/app.py``) is a thin page over these modules; ``medfusion review``
starts it.
"""
