"""`pretrain-0.3m` / `pretrain-0.5m` on fixture corpora in NIH's, CheXpert-small's and MIMIC-CXR-JPG's layouts: the
union is the sum of the train splits, holds no evaluation image, and a leaking corpus is refused."""

import csv
import os
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image
from test_data_mimic import make_mimic

from cxr_vitmae.data import CorpusError, chexpert, label_names, load_cxr_dataset, mimic, nih, pretrain
from cxr_vitmae.data.schema import ImageRecord

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
# patient -> (number of images, split list); patients 1-5 are train_val (one becomes validation), 6-7 test.
NIH_PATIENTS = {1: (2, "train_val"), 2: (1, "train_val"), 3: (2, "train_val"), 4: (1, "train_val")}
NIH_PATIENTS |= {5: (1, "train_val"), 6: (2, "test"), 7: (1, "test")}
CHEXPERT_LABELS = chexpert.CHEXPERT_LABELS


def write_image(path: Path, value: int, format: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path, format=format)


def make_nih(root: Path, extra_train_val: tuple[str, ...] = ()) -> Path:
    rows, lists = [], {"train_val": [], "test": []}
    for patient, (count, split) in NIH_PATIENTS.items():
        for follow_up in range(count):
            name = f"{patient:08d}_{follow_up:03d}.png"
            view = "PA" if follow_up % 2 == 0 else "AP"
            rows.append(f"{name},No Finding,{follow_up},{patient},50,M,{view},8,8,0.143,0.143")
            lists[split].append(name)
            write_image(root / "images" / name, patient, "PNG")
    (root / "Data_Entry_2017.csv").write_text("\n".join([NIH_HEADER, *rows]) + "\n")
    (root / "train_val_list.txt").write_text("\n".join([*lists["train_val"], *extra_train_val]) + "\n")
    (root / "test_list.txt").write_text("\n".join(lists["test"]) + "\n")
    return root


def chexpert_row(path: str, orientation: str, position: str) -> list[str]:
    cells = {"Cardiomegaly": "1.0", "Edema": "-1.0"}
    return [path, "Female", "60", orientation, position, *[cells.get(name, "") for name in CHEXPERT_LABELS]]


def make_chexpert(root: Path, extra_train_rows: tuple[list[str], ...] = ()) -> Path:
    small = root / "CheXpert-v1.0-small"
    train = [
        ("train/patient00001/study1/view1_frontal.jpg", "Frontal", "AP"),
        ("train/patient00001/study1/view2_lateral.jpg", "Lateral", ""),
        ("train/patient00002/study1/view1_frontal.jpg", "Frontal", "PA"),
        ("train/patient00002/study2/view1_frontal.jpg", "Frontal", "AP"),
    ]
    valid = [
        ("valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP"),
        ("valid/patient64542/study1/view1_lateral.jpg", "Lateral", ""),  # a valid patient with no frontal view
        ("valid/patient64543/study1/view1_frontal.jpg", "Frontal", "PA"),
    ]
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
    for file_name, rows, extra in (("train.csv", train, extra_train_rows), ("valid.csv", valid, ())):
        small.mkdir(parents=True, exist_ok=True)
        with open(small / file_name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows([chexpert_row(f"CheXpert-v1.0-small/{path}", *view) for path, *view in rows])
            writer.writerows(extra)
        for value, (path, *_) in enumerate(rows):
            write_image(small / path, 100 + value, "JPEG")
    return root


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrain")
    make_nih(root / "nih")
    make_chexpert(root / "chexpert")
    make_mimic(root / "mimic")
    return root


def part_splits(root: Path) -> dict[str, dict[str, list[ImageRecord]]]:
    """Each corpus's splits as its own builder reads them with the builders' defaults, except that the union takes
    all of CheXpert's train.csv (the paper's), not the fine-tuning train split that lacks the carved validation."""
    return {
        "nih-chestxray14": nih.read_splits(root / "nih", nih.NIHChestXray14Config()),
        "chexpert": chexpert.read_splits(root / "chexpert", chexpert.CheXpertConfig(validation_fraction=0)),
        "mimic-cxr": mimic.read_splits(root / "mimic", mimic.MIMICCXRConfig()),
    }


def test_pretrain_05m_is_the_sum_of_the_train_splits_and_holds_no_evaluation_image(corpora, tmp_path):
    union = load_cxr_dataset("pretrain-0.5m", corpora, cache_dir=tmp_path / "cache")
    assert list(union) == ["train"]
    train = union["train"]
    assert set(train.features) == {"image", "image_id", "patient_id", "view", "source"}
    assert label_names("pretrain-0.5m") == []

    parts = part_splits(corpora)
    expected_sizes = {source: len(splits["train"]) for source, splits in parts.items()}
    # NIH: 5 train_val patients minus the carved validation patient; CheXpert: 3 frontal train images; MIMIC: 3 AP/PA.
    assert expected_sizes["chexpert"] == 3 and expected_sizes["mimic-cxr"] == 3
    assert 0 < expected_sizes["nih-chestxray14"] < 7
    sources = train["source"]
    assert {source: sources.count(source) for source in set(sources)} == expected_sizes
    assert train.num_rows == sum(expected_sizes.values())

    ids = train["image_id"]
    assert len(set(ids)) == len(ids)
    assert all(image_id.startswith(f"{source}/") for image_id, source in zip(ids, sources, strict=True))
    assert {view for view, source in zip(train["view"], sources, strict=True) if source == "chexpert"} <= {"AP", "PA"}
    assert "chexpert/train/patient00001/study1/view1_frontal.jpg" in ids

    # No evaluation image, by path, image id or patient: NIH test + validation, CheXpert valid, MIMIC validate + test
    # (every view of the split file, not only the frontal images the MIMIC builder keeps).
    images = train.cast_column("image", datasets.Image(decode=False))["image"]
    paths = {Path(image["path"]).resolve() for image in images}
    split_table = mimic.read_split_table(corpora / "mimic")
    held_out_mimic = set(split_table.loc[split_table["split"] != "train", "dicom_id"])
    for source, splits in parts.items():
        evaluation = [record for split, records in splits.items() if split != "train" for record in records]
        assert evaluation
        assert not {record.path.resolve() for record in evaluation} & paths
        assert not {f"{source}/{record.image_id}" for record in evaluation} & set(ids)
        assert not {f"{source}/{record.patient_id}" for record in evaluation} & set(train["patient_id"])
    assert not {f"mimic-cxr/{dicom_id}" for dicom_id in held_out_mimic} & set(ids)


def test_pretrain_03m_with_corpora_elsewhere(corpora, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    union = load_cxr_dataset(
        "pretrain-0.3m",
        elsewhere,
        cache_dir=tmp_path / "cache",
        nih_dir=str(corpora / "nih"),
        chexpert_dir=os.path.relpath(corpora / "chexpert", elsewhere),  # relative to data_dir
    )["train"]
    parts = part_splits(corpora)
    assert set(union["source"]) == {"nih-chestxray14", "chexpert"}
    assert union.num_rows == len(parts["nih-chestxray14"]["train"]) + len(parts["chexpert"]["train"])
    with pytest.raises(CorpusError, match=r"pretrain-0\.3m has no MIMIC-CXR part"):
        load_cxr_dataset("pretrain-0.3m", corpora, cache_dir=tmp_path / "cache", mimic_dir=str(corpora / "mimic"))


def test_nih_test_image_listed_in_train_val_is_refused(tmp_path):
    root = tmp_path / "leak"
    make_nih(root / "nih", extra_train_val=("00000006_000.png",))
    make_chexpert(root / "chexpert")
    with pytest.raises(CorpusError, match=r"00000006_000\.png"):
        load_cxr_dataset("pretrain-0.3m", root, cache_dir=tmp_path / "cache")


def test_nih_split_files_cannot_bring_an_official_test_image_in(tmp_path):
    # medical_mae-style split files define their own test set; NIH's official test list still holds.
    root = tmp_path / "corpora"
    make_nih(root / "nih")
    make_chexpert(root / "chexpert")
    no_findings = " ".join(["0"] * 14)

    def write_splits(folder: Path, train: list[str]) -> str:
        folder.mkdir(parents=True)
        for name, images in (("train", train), ("val", ["00000002_000.png"]), ("test", ["00000007_000.png"])):
            (folder / f"{name}_official.txt").write_text("".join(f"{image} {no_findings}\n" for image in images))
        return str(folder)

    clean = write_splits(tmp_path / "clean", ["00000001_000.png", "00000003_000.png"])
    union = load_cxr_dataset(
        "pretrain-0.3m", root, cache_dir=tmp_path / "cache", nih_options={"split_files_dir": clean}
    )
    assert "nih-chestxray14/00000003_000.png" in union["train"]["image_id"]
    leaking = write_splits(tmp_path / "leaking", ["00000001_000.png", "00000006_000.png"])
    with pytest.raises(CorpusError, match=r"share their image id .*00000006_000\.png"):
        load_cxr_dataset("pretrain-0.3m", root, cache_dir=tmp_path / "cache2", nih_options={"split_files_dir": leaking})


def test_chexpert_train_row_pointing_at_a_valid_image_is_refused(tmp_path):
    root = tmp_path / "leak"
    make_nih(root / "nih")
    # A valid image whose own (lateral) row the frontal filter drops, listed in train.csv as a frontal image: the
    # CheXpert builder's patient check cannot see it, the union's check must.
    leak = chexpert_row("CheXpert-v1.0-small/valid/patient64542/study1/view1_lateral.jpg", "Frontal", "AP")
    make_chexpert(root / "chexpert", extra_train_rows=(leak,))
    with pytest.raises(CorpusError, match=r"1 train\.csv row\(s\) point outside train/.*valid/patient64542"):
        load_cxr_dataset("pretrain-0.3m", root, cache_dir=tmp_path / "cache")
    # A valid image that its own split keeps is refused too (by the CheXpert builder's patient check).
    leak = chexpert_row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP")
    make_chexpert(root / "chexpert", extra_train_rows=(leak,))
    with pytest.raises(CorpusError, match=r"patient64541"):
        load_cxr_dataset("pretrain-0.3m", root, cache_dir=tmp_path / "cache2")


def record(path: Path, image_id: str, patient: str) -> ImageRecord:
    return ImageRecord(path=path, image_id=image_id, patient_id=patient, view="PA")


@pytest.mark.parametrize(
    ("leak", "message"),
    [
        ("same file", r"1 nih-chestxray14 train image\(s\) share their path with an evaluation image"),
        ("same id", r"1 nih-chestxray14 train image\(s\) share their image id .*00000009_000\.png"),
        ("same patient", r"1 nih-chestxray14 train image\(s\) share their patient .*00000009"),
    ],
)
def test_union_asserts_no_evaluation_image_whatever_a_part_returns(corpora, monkeypatch, leak, message):
    """The union's own assertion, independent of the part builders' checks: a part whose `read_splits` returns an
    evaluation image in train is refused."""
    test_image = corpora / "nih" / "images" / "00000006_000.png"
    held_out = record(test_image, "00000009_000.png", "00000009")
    train = {
        "same file": record(test_image, "00000010_000.png", "00000010"),
        "same id": record(corpora / "nih" / "images" / "00000001_000.png", "00000009_000.png", "00000010"),
        "same patient": record(corpora / "nih" / "images" / "00000001_000.png", "00000010_000.png", "00000009"),
    }[leak]
    monkeypatch.setattr(nih, "read_splits", lambda data_dir, config: {"train": [train], "test": [held_out]})
    config = pretrain.PretrainConfig(data_dir=str(corpora))
    with pytest.raises(CorpusError, match=message):
        pretrain.read_union("pretrain-0.3m", (pretrain.NIH, pretrain.CHEXPERT), config)


def test_union_uses_every_held_out_mimic_image_of_the_split_file(corpora, monkeypatch):
    # A MIMIC read_splits that (wrongly) returns a lateral test image as train: the builder's records of the
    # evaluation splits lack it (AP/PA only), the split file does not.
    lateral_test = mimic.read_splits(corpora / "mimic", mimic.MIMICCXRConfig(views="all"))["test"]
    (lateral,) = [r for r in lateral_test if r.view == "LATERAL"]
    real = mimic.read_splits
    monkeypatch.setattr(mimic, "read_splits", lambda data_dir, config: real(data_dir, config) | {"train": [lateral]})
    config = pretrain.PretrainConfig(data_dir=str(corpora))
    with pytest.raises(CorpusError, match=r"1 mimic-cxr train image\(s\) share their path"):
        pretrain.read_union("pretrain-0.5m", pretrain.Pretrain05M.SOURCES, config)


def test_cache_key_covers_corpora_outside_data_dir(corpora, tmp_path):
    inside = pretrain._combined_hash("abc", str(corpora), {"nih_dir": "nih"})
    assert inside == pretrain._combined_hash("abc", str(corpora), {})
    options = {"nih_dir": str(corpora / "nih"), "chexpert_dir": os.path.relpath(corpora / "chexpert", tmp_path)}
    outside = pretrain._combined_hash("abc", str(tmp_path), options)
    for entry in (corpora / "nih" / "Data_Entry_2017.csv", corpora / "chexpert" / "CheXpert-v1.0-small" / "train.csv"):
        os.utime(entry, ns=(entry.stat().st_atime_ns, entry.stat().st_mtime_ns + 10**9))  # same content, newer
        assert pretrain._combined_hash("abc", str(tmp_path), options) != outside
        outside = pretrain._combined_hash("abc", str(tmp_path), options)
