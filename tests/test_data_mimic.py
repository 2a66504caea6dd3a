"""`mimic-cxr` on a fixture corpus in MIMIC-CXR-JPG's distributed layout: gzip CSVs with the real headers, per-study
labels (1.0 / 0.0 / -1.0 / blank), a study without a label row, AP / PA / LATERAL / missing views, and 2.1.0's
radiologist test file with its `Airspace Opacity` column."""

import csv
import gzip
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_vitmae.data import CorpusError, label_names, load_cxr_dataset
from cxr_vitmae.data.label_vocabulary import canonical_label
from cxr_vitmae.data.mimic import MIMIC_CXR_LABELS, MIMICCXRConfig, read_splits

METADATA_HEADER = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
LABELER_HEADER = ["subject_id", "study_id", *MIMIC_CXR_LABELS]
# The radiologist file names Lung Opacity "Airspace Opacity" and (here) lists its columns in another order.
GOLD_HEADER = ["study_id", "No Finding", *[name for name in MIMIC_CXR_LABELS if name != "No Finding"]]
GOLD_HEADER[GOLD_HEADER.index("Lung Opacity")] = "Airspace Opacity"


def dicom(index: int) -> str:
    return f"{index:08x}-bde0afdd-112c0b34-7bc16630-4e384014"


# dicom index, subject, study, ViewPosition ("" = missing), split
IMAGES = [
    (1, "10000001", "50000001", "AP", "train"),
    (2, "10000001", "50000001", "LATERAL", "train"),
    (3, "10000001", "50000002", "PA", "train"),
    (4, "10000002", "50000003", "", "train"),  # study 50000003 has no label row
    (5, "10000002", "50000003", "AP", "train"),
    (6, "11000003", "50000004", "PA", "validate"),
    (7, "12000004", "50000005", "AP", "test"),  # radiologist-labelled study
    (8, "12000004", "50000005", "LATERAL", "test"),
    (9, "12000005", "50000006", "PA", "test"),  # test study the radiologist did not label
]
# study -> raw cells of the labeler file ({label: cell}, the rest blank)
CHEXPERT_ROWS = {
    ("10000001", "50000001"): {"Atelectasis": "1.0", "Cardiomegaly": "-1.0", "Edema": "0.0"},
    ("10000001", "50000002"): {"No Finding": "1.0"},
    ("11000003", "50000004"): {"Pleural Effusion": "1.0", "Pneumonia": "-1.0"},
    ("12000004", "50000005"): {"Lung Opacity": "-1.0", "Support Devices": "1.0"},
    ("12000005", "50000006"): {"Pneumothorax": "1.0"},
}
NEGBIO_ROWS = {key: {"Fracture": "1.0"} for key in CHEXPERT_ROWS}
GOLD_ROWS = {"50000005": {"Airspace Opacity": "1.0", "Pleural Effusion": "-1.0", "Edema": "0.0"}}


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def label_rows(header: list[str], cells: dict, key_columns: int) -> list[list[str]]:
    rows = []
    for key, values in cells.items():
        key = key if isinstance(key, tuple) else (key,)
        rows.append([*key, *[values.get(name, "") for name in header[key_columns:]]])
    return rows


def write_jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 10), value, dtype=np.uint8)).save(path, quality=95)


def make_mimic(root: Path, images=IMAGES, gold: bool = True, images_folder: str = "files") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    metadata, splits = [], []
    for index, subject, study, view, split in images:
        metadata.append([dicom(index), subject, study, "CHEST", view, "12", "10", "21800506", "213014.531", "", "", ""])
        splits.append([dicom(index), study, subject, split])
        write_jpeg(
            root / images_folder / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom(index)}.jpg", index
        )
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_HEADER, metadata)
    write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], splits)
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", LABELER_HEADER, label_rows(LABELER_HEADER, CHEXPERT_ROWS, 2))
    write_csv(root / "mimic-cxr-2.0.0-negbio.csv.gz", LABELER_HEADER, label_rows(LABELER_HEADER, NEGBIO_ROWS, 2))
    if gold:
        write_csv(root / "mimic-cxr-2.1.0-test-set-labeled.csv", GOLD_HEADER, label_rows(GOLD_HEADER, GOLD_ROWS, 1))
    return root


def vector(**cells: float) -> list[float]:
    """A 14-label vector: the given labels (underscores for spaces), every other one `rest`."""
    rest = cells.pop("rest", 0.0)
    values = {name.replace("_", " "): value for name, value in cells.items()}
    assert set(values) <= set(MIMIC_CXR_LABELS), values
    return [values.get(name, rest) for name in MIMIC_CXR_LABELS]


def assert_labels(actual, expected) -> None:
    assert len(actual) == len(expected) == 14
    for name, a, e in zip(MIMIC_CXR_LABELS, actual, expected, strict=True):
        assert (math.isnan(a) and math.isnan(e)) or a == e, (name, a, e)


def by_id(records):
    return {record.image_id: record for record in records}


def splits_of(data_dir: Path, **options):
    return read_splits(data_dir, MIMICCXRConfig(**options))


@pytest.fixture
def mimic_dir(tmp_path) -> Path:
    return make_mimic(tmp_path / "mimic")


def test_load_defaults_frontal_views_policies_and_radiologist_test(mimic_dir, tmp_path):
    dataset = load_cxr_dataset("mimic-cxr", mimic_dir, cache_dir=tmp_path / "cache")
    assert {split: dataset[split].num_rows for split in dataset} == {"train": 3, "validation": 1, "test": 1}
    assert label_names("mimic-cxr") == list(MIMIC_CXR_LABELS)

    train = {row["image_id"]: row for row in dataset["train"]}
    assert sorted(train) == [dicom(1), dicom(3), dicom(5)]
    # Uncertain -> NaN ("ignore"), blank -> 0 ("zeros"): the defaults.
    assert_labels(train[dicom(1)]["labels"], vector(Atelectasis=1.0, Cardiomegaly=math.nan))
    assert_labels(train[dicom(3)]["labels"], vector(No_Finding=1.0))
    # The study without a label row keeps its image with all-NaN labels (unlabeled_studies="nan").
    assert_labels(train[dicom(5)]["labels"], vector(rest=math.nan))
    assert (train[dicom(1)]["view"], train[dicom(3)]["view"], train[dicom(1)]["patient_id"]) == ("AP", "PA", "10000001")
    assert train[dicom(1)]["image"].size == (10, 12)

    # The radiologist's labels (Airspace Opacity -> Lung Opacity) replace the labeler's on the test split, which
    # holds only the radiologist-labelled study's frontal image.
    (test,) = dataset["test"]
    assert test["image_id"] == dicom(7)
    assert_labels(test["labels"], vector(Lung_Opacity=1.0, Pleural_Effusion=math.nan))
    (validation,) = dataset["validation"]
    assert_labels(validation["labels"], vector(Pleural_Effusion=1.0, Pneumonia=math.nan))

    patients = {split: set(dataset[split]["patient_id"]) for split in dataset}
    assert not patients["train"] & patients["validation"] and not patients["train"] & patients["test"]
    assert not patients["validation"] & patients["test"]


def test_views_all_keeps_lateral_and_missing_views(mimic_dir):
    records = splits_of(mimic_dir, views="all")
    assert {split: len(rows) for split, rows in records.items()} == {"train": 5, "validation": 1, "test": 2}
    views = {record.image_id: record.view for record in records["train"]}
    assert views == {dicom(1): "AP", dicom(2): "LATERAL", dicom(3): "PA", dicom(4): "", dicom(5): "AP"}
    assert [r.view for r in splits_of(mimic_dir, views=["lateral", "pa"])["test"]] == ["LATERAL"]


def test_uncertainty_and_blank_policies_per_class(mimic_dir):
    train = by_id(splits_of(mimic_dir, uncertainty={"Cardiomegaly": "ones"}, blank="ignore")["train"])
    assert_labels(train[dicom(1)].labels, vector(Atelectasis=1.0, Cardiomegaly=1.0, Edema=0.0, rest=math.nan))
    train = by_id(splits_of(mimic_dir, uncertainty="zeros", blank={"Edema": "ignore"})["train"])
    assert_labels(train[dicom(1)].labels, vector(Atelectasis=1.0, Cardiomegaly=0.0, Edema=0.0))
    validation = splits_of(mimic_dir, uncertainty="ones")["validation"][0]
    assert_labels(validation.labels, vector(Pleural_Effusion=1.0, Pneumonia=1.0))
    # Any corpus's spelling names the class (NIH's "Effusion" is MIMIC's "Pleural Effusion").
    validation = splits_of(mimic_dir, uncertainty={"pneumonia": "zeros", "Effusion": "ones"})["validation"][0]
    assert_labels(validation.labels, vector(Pleural_Effusion=1.0, Pneumonia=0.0))


def test_negbio_labeler_and_test_label_sources(mimic_dir, tmp_path):
    negbio = splits_of(mimic_dir, labeler="negbio", test_labels="labeler")
    assert_labels(by_id(negbio["train"])[dicom(1)].labels, vector(Fracture=1.0))
    # The labeler's test split: every frontal test image, the labeler's labels.
    test = by_id(negbio["test"])
    assert sorted(test) == [dicom(7), dicom(9)]
    assert_labels(test[dicom(9)].labels, vector(Fracture=1.0))

    no_gold = make_mimic(tmp_path / "no-gold", gold=False)
    auto = splits_of(no_gold)
    assert sorted(by_id(auto["test"])) == [dicom(7), dicom(9)]
    assert_labels(by_id(auto["test"])[dicom(7)].labels, vector(Lung_Opacity=math.nan, Support_Devices=1.0))
    with pytest.raises(CorpusError, match=r"mimic-cxr-2\.1\.0-test-set-labeled\.csv: no such file"):
        splits_of(no_gold, test_labels="radiologist")


def test_unlabeled_studies_error_names_the_study(mimic_dir):
    with pytest.raises(CorpusError, match=r"chexpert\.csv\.gz: 1 study\(ies\) .* no label row .* first: 50000003"):
        splits_of(mimic_dir, unlabeled_studies="error")


def test_images_folder_option(tmp_path):
    data_dir = make_mimic(tmp_path / "resized", images_folder="files_resized_320")
    records = splits_of(data_dir, images_folder="files_resized_320")
    assert all("files_resized_320" in record.path.parts for rows in records.values() for record in rows)
    with pytest.raises(CorpusError, match=r"5 of 5 image\(s\) listed in .* are missing: .*files/p10/p10000001"):
        splits_of(data_dir)


def rewrite_labels(data_dir: Path, header: list[str], rows: dict) -> None:
    write_csv(data_dir / "mimic-cxr-2.0.0-chexpert.csv.gz", header, label_rows(header, rows, 2))


def test_header_mismatch_names_expected_and_found(mimic_dir):
    header = [name for name in LABELER_HEADER if name != "Edema"]
    rewrite_labels(mimic_dir, header, CHEXPERT_ROWS)
    with pytest.raises(CorpusError, match=r"chexpert\.csv\.gz: header mismatch; expected columns .*found .*'Edema'"):
        splits_of(mimic_dir)


def test_unknown_label_value_names_file_row_and_column(mimic_dir):
    rows = dict(CHEXPERT_ROWS)
    rows[("10000001", "50000002")] = {"Edema": "2.0"}
    rewrite_labels(mimic_dir, LABELER_HEADER, rows)
    with pytest.raises(CorpusError, match=r"chexpert\.csv\.gz, line 3, column 'Edema': label value '2\.0'"):
        splits_of(mimic_dir)


def test_missing_and_unreadable_images(mimic_dir):
    for index in (3, 6, 9):  # 9 is left out of the radiologist test split: not needed, not reported
        path = next(mimic_dir.rglob(f"{dicom(index)}.jpg"))
        path.unlink()
    with pytest.raises(CorpusError, match=rf"2 of 5 image\(s\) listed in .* missing: .*{dicom(3)}\.jpg, .*{dicom(6)}"):
        splits_of(mimic_dir)
    make_mimic(mimic_dir)
    broken = next(mimic_dir.rglob(f"{dicom(6)}.jpg"))
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(CorpusError, match=rf"1 image\(s\) listed in .* or are truncated: .*{dicom(6)}\.jpg"):
        splits_of(mimic_dir)


def test_patient_overlap_and_empty_split(tmp_path):
    leaking = [*IMAGES, (10, "11000003", "50000007", "PA", "train")]
    data_dir = make_mimic(tmp_path / "leak", images=leaking)
    with pytest.raises(
        CorpusError, match=r"split\.csv\.gz: 1 patient\(s\) appear in more than one split; first: 11000003"
    ):
        splits_of(data_dir)
    with pytest.raises(CorpusError, match=r"split 'train' has no image with views LL"):
        splits_of(make_mimic(tmp_path / "ok"), views=("LL",))


def test_radiologist_study_outside_test_split(mimic_dir):
    rows = {**GOLD_ROWS, "50000001": {"Edema": "1.0"}}
    write_csv(mimic_dir / "mimic-cxr-2.1.0-test-set-labeled.csv", GOLD_HEADER, label_rows(GOLD_HEADER, rows, 1))
    with pytest.raises(CorpusError, match=r"1 radiologist-labelled study\(ies\) are not in the test split.*50000001"):
        splits_of(mimic_dir)


def test_metadata_without_split_row(mimic_dir):
    write_csv(
        mimic_dir / "mimic-cxr-2.0.0-split.csv.gz",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[dicom(i), study, subject, split] for i, subject, study, _, split in IMAGES if i != 4],
    )
    with pytest.raises(
        CorpusError, match=rf"1 image\(s\) of mimic-cxr-2\.0\.0-metadata\.csv\.gz have no row in .*{dicom(4)}"
    ):
        splits_of(mimic_dir)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"labeler": "chexbert"}, "labeler='chexbert': expected one of chexpert, negbio"),
        ({"uncertainty": "maybe"}, "option uncertainty for 'Atelectasis' is 'maybe'"),
        ({"uncertainty": {"Mass": "ones"}}, r"option uncertainty: unknown label 'Mass'"),
        ({"uncertainty": {"Effusion": "ones", "Pleural Effusion": "zeros"}}, r"'Pleural Effusion' is given two"),
        ({"blank": "ones"}, "option blank for 'Atelectasis' is 'ones'; expected one of zeros, ignore"),
        ({"views": "frontal"}, "views='frontal': expected 'all'"),
        ({"test_labels": "gold"}, "test_labels='gold'"),
        ({"unlabeled_studies": "drop"}, "unlabeled_studies='drop'"),
    ],
)
def test_bad_options_fail_before_reading(options, message):
    with pytest.raises(CorpusError, match=message):
        label_names("mimic-cxr", **options)


def test_labels_are_spelled_canonically():
    # The radiologist file's columns are matched through canonical_label, which must leave these 14 unchanged.
    assert [canonical_label(name) for name in MIMIC_CXR_LABELS] == list(MIMIC_CXR_LABELS)
