"""The radiologist review side: decision store with audit trail, login, worklist, label export.

The Streamlit app (``apps/review/app.py``) is a thin page over these modules; ``medfusion review``
starts it (:mod:`.launch`, settings passed through the environment by :mod:`.settings`).

* :mod:`.data`: the scoring output (:func:`medfusion.scoring.read_results`), one study's inputs and the
  model that scored them; :mod:`.worklist`: scored studies joined with their review state.
* :mod:`.view`, :mod:`.panels`: what the study view draws (pure functions, no Streamlit);
  :mod:`.explanations`: explanations computed once per (model, study, methods) in a bounded cache.
* :mod:`.store`: append-only, audited per-label decisions (sqlite); :mod:`.auth`: users file or trusted
  header; :mod:`.comment_guard`: warns before a comment stores an identifier.
* :mod:`.export`: reviewed labels as CSV and FHIR (:mod:`medfusion.fhir.write`) for retraining.

May import: :mod:`medfusion.scoring` (its output folder, model resolution, running a job),
:mod:`medfusion.inference`, :mod:`medfusion.explain`, :mod:`medfusion.results` (``decide``, columns),
:mod:`medfusion.fhir`, :mod:`medfusion.processing`, :mod:`medfusion.ingest` (manifests),
:mod:`medfusion.config`, :mod:`medfusion.privacy`, :mod:`medfusion.errors`. Nothing in ``medfusion``
imports this package except the CLI; it never imports training. Nothing is imported here.
"""
