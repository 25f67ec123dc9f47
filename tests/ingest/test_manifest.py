"""Manifest reading, writing, validation, splitting, hashing and records."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from medfusion.errors import ManifestError
from medfusion.ingest.manifest import (
    assign_splits,
    manifest_hash,
    manifest_labels,
    read_manifest,
    rows_to_records,
    write_manifest,
)


def make_manifest(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "study_uid": [f"1.2.3.{i}" for i in range(n)],
            "image_paths": [[f"dicom/{i}/a.dcm", f"dicom/{i}/b.dcm"] if i % 3 else [] for i in range(n)],
            "report_text": ['FINDINGS: x\nIMPRESSION: "quoted", y' if i % 2 else "" for i in range(n)],
            "split": ["train", "val", "test"] * (n // 3) + ["train"] * (n % 3),
            "patient_pseudonym": [f"pat-{i // 2}" for i in range(n)],
            "accession_pseudonym": [f"acc-{i:016x}" if i % 2 else None for i in range(n)],
            "y_effusion": [1.0, 0.0, np.nan, 1.0, 0.0, np.nan][:n] + [0.0] * max(0, n - 6),
            "y_nodule": [0.0] * n,
            "lesion_mask_path": ["masks/0.nii.gz"] + [None] * (n - 1),
            "site": ["a", "b"] * (n // 2) + ["a"] * (n % 2),
            "age_bin": [40, 50, 60, 70, 80, 90][:n] + [0] * max(0, n - 6),
        }
    )


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    df = make_manifest()
    path = write_manifest(df, tmp_path / "sub" / f"manifest{suffix}")
    back = read_manifest(path, labels=["effusion", "nodule"])
    assert list(back.columns) == list(df.columns)
    assert back["image_paths"].tolist() == df["image_paths"].tolist()
    assert back["report_text"].tolist() == df["report_text"].tolist()
    for column in ("accession_pseudonym", "lesion_mask_path"):  # str or None after reading
        assert back[column].tolist() == [None if pd.isna(v) else v for v in df[column]]
    np.testing.assert_array_equal(back["y_effusion"].to_numpy(), df["y_effusion"].to_numpy())
    assert back["y_effusion"].dtype == np.float64
    assert back["site"].tolist() == df["site"].tolist() and back["age_bin"].tolist() == df["age_bin"].tolist()
    assert manifest_hash(back) == manifest_hash(df)
    assert not list(path.parent.glob(".*.tmp"))


def test_csv_layout(tmp_path: Path) -> None:
    path = write_manifest(make_manifest(), tmp_path / "m.csv")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert json.loads(raw["image_paths"][1]) == ["dicom/1/a.dcm", "dicom/1/b.dcm"]
    assert raw["image_paths"][0] == "[]"
    assert raw["y_effusion"].tolist()[:3] == ["1.0", "0.0", ""]


def test_manifest_labels() -> None:
    assert manifest_labels(make_manifest()) == ["effusion", "nodule"]


def _csv_with(tmp_path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    """A manifest CSV written without validation, after ``edit``."""
    df = edit(make_manifest())
    if "image_paths" in df.columns:
        df["image_paths"] = [json.dumps(p) if isinstance(p, list) else p for p in df["image_paths"]]
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    return path


def _set(column: str, row: int, value: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df[column] = df[column].astype(object)
        df.at[row, column] = value
        return df

    return edit


@pytest.mark.parametrize(
    ("edit", "labels", "reason"),
    [
        (lambda df: df.drop(columns=["split"]), None, "missing required column(s): split"),
        (lambda df: df.drop(columns=["study_uid", "report_text"]), None, "column(s): study_uid, report_text"),
        (lambda df: df, ["effusion", "pneumothorax"], "no label column y_pneumothorax for requested label"),
        (_set("study_uid", 3, "1.2.3.0"), None, "duplicate study_uid: 1.2.3.0 (2 rows)"),
        (_set("y_effusion", 1, 2.0), None, "y_effusion of study 1.2.3.1 is 2.0; label values must be 1, 0 or empty"),
        (_set("y_nodule", 2, "yes"), None, "y_nodule of study 1.2.3.2 is 'yes'"),
        (_set("split", 4, "dev"), None, "bad split value 'dev' for study 1.2.3.4"),
        (_set("split", 4, ""), None, "bad split value '' for study 1.2.3.4"),
        (_set("image_paths", 5, "dicom/5/a.dcm"), None, "image_paths of study 1.2.3.5 is not a list of paths"),
        (_set("image_paths", 5, json.dumps({"a": 1})), None, "image_paths of study 1.2.3.5 is not a list of paths"),
        (_set("study_uid", 2, ""), None, "row 3: empty or non-text study_uid"),
        (_set("patient_pseudonym", 0, ""), None, "row 1: empty or non-text patient_pseudonym"),
        (lambda df: df.iloc[0:0], None, "manifest has no studies"),
    ],
)
def test_csv_validation_errors_name_file_and_reason(
    tmp_path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame], labels: list[str] | None, reason: str
) -> None:
    path = _csv_with(tmp_path, edit)
    with pytest.raises(ManifestError) as info:
        read_manifest(path, labels=labels)
    assert info.value.source == str(path)
    assert reason in info.value.reason
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_set("y_effusion", 0, -1.0), "label values must be 1, 0 or empty"),
        (_set("image_paths", 1, [1, 2]), "image_paths of study 1.2.3.1 is not a list of paths"),
        (_set("split", 0, None), "missing split value for study 1.2.3.0"),
    ],
)
def test_parquet_validation_errors(tmp_path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame], reason: str) -> None:
    path = tmp_path / "bad.parquet"
    df = edit(make_manifest())
    with pytest.raises(ManifestError, match=r"bad\.parquet"):
        write_manifest(df, path)  # the writer refuses invalid content too
    if df["image_paths"].map(lambda p: all(isinstance(x, str) for x in p)).all():
        df.to_parquet(path, index=False)
        with pytest.raises(ManifestError) as info:
            read_manifest(path)
        assert info.value.source == str(path) and reason in info.value.reason


def test_parquet_labels_as_ints_and_bools_are_accepted(tmp_path: Path) -> None:
    df = make_manifest()
    df["y_nodule"] = [0, 1, 0, 1, 0, 1]
    df["y_flag"] = [True, False] * 3
    df.to_parquet(tmp_path / "m.parquet", index=False)
    back = read_manifest(tmp_path / "m.parquet", labels=["nodule", "flag"])
    assert back["y_nodule"].dtype == np.float64 and back["y_flag"].tolist() == [1.0, 0.0] * 3


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("absent.csv", "manifest file not found"),
        ("absent.parquet", "manifest file not found"),
        ("m.xlsx", "unknown manifest extension '.xlsx'"),
        ("manifest", "unknown manifest extension '(none)'"),
    ],
)
def test_file_errors(tmp_path: Path, name: str, reason: str) -> None:
    (tmp_path / "m.xlsx").write_bytes(b"PK")
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path / name)
    assert info.value.source == str(tmp_path / name) and reason in info.value.reason


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("m.parquet", b"not parquet", "cannot read parquet manifest"),
        ("m.csv", b"study_uid,report_text\n\xff\xfe,x\n", "not UTF-8"),
        ("m.csv", b"", "empty CSV file"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ManifestError, match=name) as info:
        read_manifest(tmp_path / name)
    assert reason in info.value.reason


def test_write_refuses_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="unknown manifest extension"):
        write_manifest(make_manifest(), tmp_path / "m.json")


# ----------------------------------------------------------------------------------------- splits


def _cohort(n_patients: int, studies_per_patient: int = 3) -> pd.DataFrame:
    rows = [
        {"study_uid": f"1.{p}.{s}", "patient_pseudonym": f"pat-{p:04d}"}
        for p in range(n_patients)
        for s in range(studies_per_patient)
    ]
    return pd.DataFrame(rows)


def test_assign_splits_is_patient_level_and_deterministic() -> None:
    df = _cohort(400)
    a = assign_splits(df, seed=7, val_fraction=0.2, test_fraction=0.1)
    b = assign_splits(df.sample(frac=1.0, random_state=1), seed=7, val_fraction=0.2, test_fraction=0.1)
    assert a.set_index("study_uid")["split"].sort_index().equals(b.set_index("study_uid")["split"].sort_index())
    assert (a.groupby("patient_pseudonym")["split"].nunique() == 1).all()  # no leakage
    shares = a.drop_duplicates("patient_pseudonym")["split"].value_counts(normalize=True)
    assert abs(shares["val"] - 0.2) < 0.07 and abs(shares["test"] - 0.1) < 0.06
    assert "split" not in df.columns  # input untouched
    other_seed = assign_splits(df, seed=8, val_fraction=0.2, test_fraction=0.1)
    assert not other_seed["split"].equals(a["split"])


def test_assign_splits_adding_rows_keeps_existing_assignment() -> None:
    small = assign_splits(_cohort(100), seed=0, val_fraction=0.25, test_fraction=0.25)
    big = assign_splits(_cohort(300), seed=0, val_fraction=0.25, test_fraction=0.25)
    merged = small.merge(big, on="study_uid", suffixes=("_small", "_big"))
    assert len(merged) == len(small)
    assert (merged["split_small"] == merged["split_big"]).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "sum < 1"),
        ({"val_fraction": -0.1, "test_fraction": 0.2}, "sum < 1"),
        ({"val_fraction": 0.1, "test_fraction": 0.1, "group_column": "site"}, "no column 'site'"),
    ],
)
def test_assign_splits_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        assign_splits(_cohort(5), seed=0, **kwargs)


def test_assign_splits_rejects_missing_group_key() -> None:
    df = _cohort(3)
    df.loc[1, "patient_pseudonym"] = None
    with pytest.raises(ValueError, match="empty patient_pseudonym"):
        assign_splits(df, seed=0, val_fraction=0.2, test_fraction=0.2)


# ------------------------------------------------------------------------------------------- hash


def test_manifest_hash_ignores_row_and_column_order() -> None:
    df = make_manifest()
    shuffled = df.sample(frac=1.0, random_state=3)[list(reversed(df.columns))]
    assert manifest_hash(shuffled) == manifest_hash(df)
    assert len(manifest_hash(df)) == 64


@pytest.mark.parametrize(
    "change",
    [
        lambda df: df.assign(report_text=df["report_text"].str.replace("y", "z")),
        lambda df: df.assign(y_nodule=[1.0] + [0.0] * 5),
        lambda df: df.assign(y_effusion=df["y_effusion"].fillna(0.0)),
        lambda df: df.assign(image_paths=[["other.dcm"], *df["image_paths"].tolist()[1:]]),
        lambda df: df.drop(columns=["site"]),
        lambda df: df.iloc[1:],
    ],
)
def test_manifest_hash_changes_with_content(change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    df = make_manifest()
    assert manifest_hash(change(df.copy())) != manifest_hash(df)


# ---------------------------------------------------------------------------------------- records


def test_rows_to_records(tmp_path: Path) -> None:
    df = read_manifest(write_manifest(make_manifest(), tmp_path / "m.parquet"))
    records = rows_to_records(df, ["nodule", "effusion"])
    assert len(records) == 6
    first, third = records[0], records[2]
    assert first["image"] == [] and third["image"] == ["dicom/2/a.dcm", "dicom/2/b.dcm"]
    assert first["report"] == "" and records[1]["report"].startswith("FINDINGS")
    assert first["label"].dtype == np.float32 and first["label"].shape == (2,)
    np.testing.assert_array_equal(first["label"], np.array([0.0, 1.0], dtype=np.float32))
    assert np.isnan(third["label"][1])
    pseudonym = {"study_uid": "1.2.3.0", "patient_pseudonym": "pat-0"}
    assert first["meta"] == {**pseudonym, "split": "train", "lesion_mask_path": "masks/0.nii.gz"}
    assert third["meta"]["lesion_mask_path"] == ""
    no_mask = rows_to_records(df.drop(columns=["lesion_mask_path"]), [])
    assert no_mask[0]["meta"] == {**pseudonym, "split": "train"} and no_mask[0]["label"].shape == (0,)
    with pytest.raises(ManifestError, match="pneumothorax"):
        rows_to_records(df, ["pneumothorax"])
