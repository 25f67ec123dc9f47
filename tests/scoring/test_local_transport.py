"""The engines' per-study costs and files: samples cross the pool by value (no shared-memory handle per
tensor); folder sources make no work folder per study (sources that write get a private one inside
the job's work folder, which the job owns and removes, an interrupted run's included)."""

from __future__ import annotations

import json
import pickle
import shutil
import stat
from collections.abc import Iterator
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.ingest.records import Rejection
from medfusion.models.tokenizer import train_wordpiece_tokenizer
from medfusion.processing.preprocessor import Preprocessor
from medfusion.processing.spec import PreprocessingSpec
from medfusion.scoring import engine_ray, workdir
from medfusion.scoring.engine_local import Prepared, prepare_study
from medfusion.scoring.sources import FolderSource, StudyRef

SPEC = PreprocessingSpec(image_size=(16, 16), max_tokens=12)
REPORT = "FINDINGS: Small left pleural effusion. The heart is normal."


@pytest.fixture(scope="module")
def preprocessor(tmp_path_factory: pytest.TempPathFactory) -> Preprocessor:
    reports = [REPORT, "FINDINGS: The lungs are clear."]
    tokenizer = train_wordpiece_tokenizer(reports, 80, tmp_path_factory.mktemp("tok"))
    return Preprocessor(SPEC, tokenizer, 3)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyRef:
    root = tmp_path_factory.mktemp("dicom")
    pixels = np.random.default_rng(0).integers(0, 4000, (24, 20)).astype(np.uint16)
    path = write_dicom(root / "a.dcm", pixels, DicomSpec(study_uid="1.2.3", series_uid="1.2.3.1"))
    return StudyRef("1.2.3", (str(path),), None)


class CopyingSource:
    """A source that writes the study's files into its work folder (as DICOMweb retrieval does)."""

    name = "copying"

    def __init__(self) -> None:
        self.workdirs: list[Path] = []

    def discover(self) -> Iterator[StudyRef]:
        return iter(())

    def materialize(self, ref: StudyRef, workdir: Path) -> list[Path]:
        self.workdirs.append(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copy(p, workdir / Path(p).name)) for p in ref.locator]


def test_prepared_crosses_the_pool_by_value(preprocessor: Preprocessor, study: StudyRef) -> None:
    prepared = prepare_study(FolderSource(Path(study.locator[0]).parent), preprocessor, study, REPORT)
    sample = prepared.sample
    assert sample is not None and sample.image is not None
    blob = bytes(ForkingPickler.dumps(prepared))  # what the pool sends back to the main process
    assert len(blob) > sample.image.numel() * 4  # the pixels themselves, not a shared-memory handle
    back: Any = pickle.loads(blob)
    assert back.study_uid == "1.2.3" and back.reason is None and back.set_aside == []
    assert torch.equal(back.sample.image, sample.image) and back.sample.image.dtype == torch.float32
    assert torch.equal(back.sample.input_ids, sample.input_ids) and back.sample.report == sample.report
    assert torch.equal(back.sample.label.isnan(), sample.label.isnan()) and back.sample.study_uid == "1.2.3"
    rejected = Prepared("1.2.4", file="b.dcm", reason="no pixel data", stage="decode", set_aside=[Rejection("c", "d")])
    assert pickle.loads(ForkingPickler.dumps(rejected)) == rejected
    # with --sr the study's headers ride along to the main process, which writes the SR
    with_sr = prepare_study(FolderSource(Path(study.locator[0]).parent), preprocessor, study, REPORT, sr=True)
    assert with_sr.source is not None
    again: Any = pickle.loads(ForkingPickler.dumps(with_sr))
    assert again.source is not None and again.source.study_uid == "1.2.3"
    assert again.source.instances == with_sr.source.instances and again.source.header == with_sr.source.header


def test_work_folders_only_for_sources_that_write(
    preprocessor: Preprocessor, study: StudyRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "work"
    temp.mkdir()
    monkeypatch.setattr(workdir, "_PRIVATE", {})
    source = FolderSource(Path(study.locator[0]).parent)
    folder = [prepare_study(source, preprocessor, study, REPORT, work_root=str(temp)) for _ in range(3)]
    (private,) = temp.iterdir()  # one folder for the process, none per study
    assert list(private.iterdir()) == [] and stat.S_IMODE(private.stat().st_mode) == 0o700
    copying = CopyingSource()
    copied = [prepare_study(copying, preprocessor, study, REPORT, work_root=str(temp)) for _ in range(2)]
    assert [w.parent for w in copying.workdirs] == [private, private] and len(set(copying.workdirs)) == 2
    assert list(private.iterdir()) == []  # each study's files removed after it
    for a, b in zip(folder, copied, strict=False):
        assert a.sample is not None and b.sample is not None
        assert a.sample.image is not None and b.sample.image is not None
        assert torch.equal(a.sample.image, b.sample.image)


def test_the_job_work_folder_is_private_and_removed_with_what_a_killed_run_left(tmp_path: Path) -> None:
    out = tmp_path / "out"
    left = out / workdir.WORK_DIR / "medfusion-work-dead" / "study-1"
    left.mkdir(parents=True)
    (left / "1.dcm").write_bytes(b"patient pixels")  # what a killed worker had retrieved
    with pytest.raises(RuntimeError), workdir.job_workdir(out) as work:
        assert work == out / workdir.WORK_DIR and list(work.iterdir()) == []
        assert stat.S_IMODE(work.stat().st_mode) == 0o700
        (work / "x").write_bytes(b"more")
        raise RuntimeError("the engine failed")
    assert not (out / workdir.WORK_DIR).exists()


def test_a_study_folder_outside_a_missing_job_folder_falls_back_to_the_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workdir, "_PRIVATE", {})
    path = workdir.study_workdir(str(tmp_path / "not-on-this-node"))
    assert path.parent.is_dir() and not path.exists() and not (tmp_path / "not-on-this-node").exists()
    shutil.rmtree(path.parent)
    again = workdir.study_workdir(str(tmp_path / "not-on-this-node"))  # the private folder went: a new one
    assert again.parent.is_dir() and again.parent != path.parent
    shutil.rmtree(again.parent)


def test_the_ray_task_puts_study_files_in_the_job_work_folder(
    preprocessor: Preprocessor, study: StudyRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workdir, "_PRIVATE", {})
    model_dir = tmp_path / "model"
    monkeypatch.setitem(engine_ray._PREPROCESSORS, str(model_dir), preprocessor)
    copying = CopyingSource()
    work = tmp_path / "work"
    work.mkdir()
    batch = {
        "study_uid": np.array([study.study_uid], dtype=object),
        "locator": np.array([json.dumps(list(study.locator))], dtype=object),
        "report_key": np.array([""], dtype=object),
        "report_text": np.array([REPORT], dtype=object),
    }
    columns = engine_ray.preprocess_batch(batch, copying, str(model_dir), 3, work_root=str(work))
    assert columns["ok"].tolist() == [True]
    (used,) = copying.workdirs
    assert used.parent.parent == work and not used.exists()
