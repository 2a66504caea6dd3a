"""`covidx` on fixture corpora in COVIDx's distributed layout: header-less, space-separated label files
(`patient_id filename class data_source`) for V9A, V9B and CXR-4 (with its val split), images in train/ val/ test/."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_vitmae.data import CorpusError, label_names, load_cxr_dataset, split_source
from cxr_vitmae.data.covidx import COVIDxConfig, read_splits
from cxr_vitmae.models.chest_xray_labels import COVIDX_LABELS

# Lines as the real files write them (sources, id styles and file-name extensions included).
V9A = {
    "train_COVIDx9A.txt": [
        "3 SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg pneumonia cohen",
        "2 auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg COVID-19 cohen",
        "ANON56 CR.1.2.840.113564.1722810170.20200317090830828260.1003000225002.png normal actmed",
        "ANON56 DX.1.2.840.113564.1722810162.20200323113158393220.1203801020003.png normal actmed",
        "3 16745_2_1.PNG pneumonia cohen",
    ],
    "test_COVIDx9A.txt": [
        "419639-003251 MIDRC-RICORD-1C-419639-003251-46647-0.png COVID-19 ricord",
        "3 e9cc806fc1c90195d999dc8d022d28.png normal rsna",  # patient "3" of another source: not a leak
        "8b0e3b8a-2c4b-4f0c-9d55-6a7c0b5c5f2e 8b0e3b8a-2c4b-4f0c-9d55-6a7c0b5c5f2e.png pneumonia rsna",
    ],
}
V9B = {
    "train_COVIDx9B.txt": ["5 ARDSSevere.png negative cohen", "2 auntminnie-a.jpeg positive cohen"],
    "test_COVIDx9B.txt": ["419639-003251 MIDRC-RICORD-1C-419639-003251-46647-0.png positive ricord"],
}
CXR4 = {
    "train.txt": ["5 ARDSSevere.png negative cohen", "2 auntminnie-a.jpeg positive cohen", "7 a.png positive cohen"],
    "val.txt": ["sub-S03044 sub-S03044_ses-E06790_run-1_bp-chest_vp-ap_cr.png positive bimcv"],
    "test.txt": ["419639-003251 MIDRC-RICORD-1C-419639-003251-46647-0.png negative ricord"],
}
FOLDERS = {"train": "train", "test": "test", "val": "val"}


def write_image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((9, 11), value, dtype=np.uint8)
    if path.suffix.lower() == ".png":
        Image.fromarray(array).save(path, format="PNG")
    else:
        Image.fromarray(array).save(path, format="JPEG")


def make_covidx(root: Path, files: dict[str, list[str]], trailing_newline: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for file_name, lines in files.items():
        (root / file_name).write_text("\n".join(lines) + ("\n" if trailing_newline else ""))
        folder = "val" if file_name.startswith("val") else ("test" if file_name.startswith("test") else "train")
        for value, line in enumerate(lines):
            write_image(root / folder / line.split()[1], 40 + value)
    return root


def test_v9a_three_classes_single_label_and_one_hot(tmp_path):
    data_dir = make_covidx(tmp_path / "covidx", V9A, trailing_newline=False)
    dataset = load_cxr_dataset("covidx", data_dir, cache_dir=tmp_path / "cache", validation_fraction=0)
    assert list(dataset) == ["train", "test"]  # no carve asked for: no validation split
    assert (dataset["train"].num_rows, dataset["test"].num_rows) == (5, 3)
    assert label_names("covidx") == list(COVIDX_LABELS) == ["normal", "pneumonia", "COVID-19"]
    assert dataset["train"].features["label"].names == list(COVIDX_LABELS)

    train = dataset["train"]
    # The first line is an example too (the files have no header).
    assert train["image_id"][0] == "SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg"
    assert train["label"] == [1, 2, 0, 0, 1]
    assert train["labels"] == [[0, 1, 0], [0, 0, 1], [1, 0, 0], [1, 0, 0], [0, 1, 0]]
    assert train["patient_id"] == ["3", "2", "ANON56", "ANON56", "3"]
    assert set(train["view"]) == {""}
    assert train[4]["image"].size == (11, 9)
    assert dataset["test"]["label"] == [2, 0, 1]


def test_9a_validation_is_a_deterministic_patient_carve_of_train(tmp_path):
    """The paper reports on test_COVIDx9A.txt; model selection gets patients carved from the train file, a patient
    being (source, id): cohen's patient 3 is one patient with two images, rsna's patient 3 another."""
    data_dir = make_covidx(tmp_path / "covidx", V9A)
    for seed in range(6):
        splits = read_splits(data_dir, COVIDxConfig(validation_fraction=0.34, validation_seed=seed))
        assert list(splits) == ["train", "validation", "test"]
        ids = {split: [r.image_id for r in rows] for split, rows in splits.items()}
        assert sorted(ids["train"] + ids["validation"]) == sorted(line.split()[1] for line in V9A["train_COVIDx9A.txt"])
        assert ids["test"] == [line.split()[1] for line in V9A["test_COVIDx9A.txt"]]
        # One whole patient carved: both images of cohen's patient 3 or of actmed's ANON56 go together.
        carved = {r.patient_id for r in splits["validation"]}
        assert len(carved) == 1 and not carved & {r.patient_id for r in splits["train"]}
        assert len(splits["validation"]) == sum(line.split()[0] in carved for line in V9A["train_COVIDx9A.txt"])
        # Deterministic, and independent of the order of the lines.
        reversed_dir = make_covidx(
            tmp_path / f"reversed{seed}", {**V9A, "train_COVIDx9A.txt": V9A["train_COVIDx9A.txt"][::-1]}
        )
        again = read_splits(reversed_dir, COVIDxConfig(validation_fraction=0.34, validation_seed=seed))
        assert sorted(r.image_id for r in again["validation"]) == sorted(ids["validation"])
    default = load_cxr_dataset("covidx", data_dir, cache_dir=tmp_path / "cache")
    assert list(default) == ["train", "validation", "test"] and default["test"].num_rows == 3
    assert split_source("covidx", "test") == "test_COVIDx9A.txt"
    assert split_source("covidx", "validation", version="CXR-4") == "val.txt"
    with pytest.raises(CorpusError, match="validation_fraction=1.5"):
        COVIDxConfig(validation_fraction=1.5)


def test_v9b_binary(tmp_path):
    records = read_splits(make_covidx(tmp_path / "b", V9B), COVIDxConfig(covidx_version="v9b", validation_fraction=0))
    assert {split: len(rows) for split, rows in records.items()} == {"train": 2, "test": 1}
    assert [(r.label, r.labels) for r in records["train"]] == [(0, (1.0, 0.0)), (1, (0.0, 1.0))]
    assert label_names("covidx", covidx_version="9B") == ["negative", "positive"]


def test_v9b_with_kaggle_version_5_file_names(tmp_path):
    kaggle = {"train.txt": V9B["train_COVIDx9B.txt"], "test.txt": V9B["test_COVIDx9B.txt"]}
    records = read_splits(make_covidx(tmp_path / "kaggle", kaggle), COVIDxConfig(covidx_version="9B"))
    official = read_splits(make_covidx(tmp_path / "b", V9B), COVIDxConfig(covidx_version="9B"))
    assert {split: [(r.image_id, r.label) for r in rows] for split, rows in records.items()} == {
        split: [(r.image_id, r.label) for r in rows] for split, rows in official.items()
    }
    # Kaggle's version 9 uses the same names plus val.txt: it is CXR-4, and a 9B request says so.
    with pytest.raises(CorpusError, match=r"that is CXR-4 \(Kaggle version 9\), not 9B"):
        read_splits(make_covidx(tmp_path / "4", CXR4), COVIDxConfig(covidx_version="9B"))


def test_cxr4_has_validation_from_val_txt(tmp_path):
    data_dir = make_covidx(tmp_path / "4", CXR4)
    dataset = load_cxr_dataset("covidx", data_dir, cache_dir=tmp_path / "cache", covidx_version="CXR-4")
    assert {split: dataset[split].num_rows for split in dataset} == {"train": 3, "validation": 1, "test": 1}
    assert dataset["validation"].features["label"].names == ["negative", "positive"]
    (validation,) = read_splits(data_dir, COVIDxConfig(covidx_version="cxr4"))["validation"]
    assert validation.path == data_dir / "val" / "sub-S03044_ses-E06790_run-1_bp-chest_vp-ap_cr.png"
    assert (validation.patient_id, validation.label, validation.labels) == ("sub-S03044", 1, (0.0, 1.0))


@pytest.mark.parametrize(
    ("file_name", "line", "message"),
    [
        ("train_COVIDx9A.txt", "12 a b.png normal cohen", r"train_COVIDx9A\.txt: line 6 has 5 field\(s\), expected 4"),
        ("train_COVIDx9A.txt", "12 a.png normal", r"train_COVIDx9A\.txt: line 6 has 3 field\(s\), expected 4"),
        ("test_COVIDx9A.txt", "12 a.png COVID19 cohen", r"test_COVIDx9A\.txt: line 4: unknown class 'COVID19'"),
        ("test_COVIDx9A.txt", "12 a.png Normal cohen", r"test_COVIDx9A\.txt: line 4: unknown class 'Normal'"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, file_name, line, message):
    data_dir = make_covidx(tmp_path / "covidx", V9A)
    with open(data_dir / file_name, "a") as handle:
        handle.write(line + "\n")
    with pytest.raises(CorpusError, match=message):
        read_splits(data_dir, COVIDxConfig())


def test_a_header_line_is_reported_not_skipped(tmp_path):
    data_dir = make_covidx(tmp_path / "covidx", V9A)
    path = data_dir / "test_COVIDx9A.txt"
    path.write_text("patient_id filename class data_source\n" + path.read_text())
    with pytest.raises(CorpusError, match=r"line 1: unknown class 'class'.*no header line"):
        read_splits(data_dir, COVIDxConfig())


def test_missing_unreadable_images_and_files(tmp_path):
    data_dir = make_covidx(tmp_path / "covidx", V9A)
    (data_dir / "train" / "16745_2_1.PNG").unlink()
    (data_dir / "test" / "e9cc806fc1c90195d999dc8d022d28.png").unlink()
    with pytest.raises(
        CorpusError, match=r"2 of 8 image\(s\) listed in the COVIDx 9A label files .* missing: .*16745_2_1"
    ):
        read_splits(data_dir, COVIDxConfig())
    data_dir = make_covidx(tmp_path / "again", V9A)
    (data_dir / "train" / "16745_2_1.PNG").write_bytes(b"\x89PNG broken")
    with pytest.raises(CorpusError, match=r"1 image\(s\) listed in .* or are truncated: .*16745_2_1\.PNG"):
        read_splits(data_dir, COVIDxConfig())
    with pytest.raises(CorpusError, match=r"train_COVIDx9B\.txt: no such file"):
        read_splits(data_dir, COVIDxConfig(covidx_version="9B"))


def test_patient_overlap_duplicates_and_empty_split(tmp_path):
    leak = {**V9A, "test_COVIDx9A.txt": [*V9A["test_COVIDx9A.txt"], "ANON56 x.png normal actmed"]}
    with pytest.raises(CorpusError, match=r"patient ANON56 \(actmed\) is in two splits: .*test_COVIDx9A\.txt line 4"):
        read_splits(make_covidx(tmp_path / "leak", leak), COVIDxConfig())
    twice = {**V9A, "test_COVIDx9A.txt": [*V9A["test_COVIDx9A.txt"], V9A["test_COVIDx9A.txt"][0]]}
    with pytest.raises(
        CorpusError, match=r"line 4 lists MIDRC-RICORD-1C-419639-003251-46647-0\.png again \(first on line 1\)"
    ):
        read_splits(make_covidx(tmp_path / "twice", twice), COVIDxConfig())
    empty = make_covidx(tmp_path / "empty", {**V9A, "test_COVIDx9A.txt": []})
    with pytest.raises(CorpusError, match=r"test_COVIDx9A\.txt: empty split"):
        read_splits(empty, COVIDxConfig())


def test_unknown_version():
    with pytest.raises(CorpusError, match=r"covidx_version='8B': expected one of 9A, 9B, CXR-4"):
        label_names("covidx", covidx_version="8B")
