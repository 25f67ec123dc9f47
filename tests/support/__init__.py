"""Helpers shared by the test packages: import them from here, never from a ``conftest.py``.

* :mod:`tests.support.demo`: the one small demo configuration and the trained demo project's record;
* :mod:`tests.support.synthetic`: a synthetic cohort whose evidence is known by construction, the
  CPU-seconds configuration that trains on it, and a training-callback recorder;
* :mod:`tests.support.phi_scan`: the PHI scanner of output files (needles from DICOM headers);
* :mod:`tests.support.scoring`: copying cohorts and running scoring jobs against the demo champion;
* :mod:`tests.support.text`: a tiny offline text stack (WordPiece vocabulary + 2-layer BERT);
* :mod:`tests.support.threads`: one torch intra-op thread for the tiny models of the tests.

Fixtures live in the ``conftest.py`` files and are built from these helpers.
"""
