"""The NIH ChestX-ray14 builder on fixture corpora written in NIH's and Kaggle's on-disk layouts."""

import math
from pathlib import Path

import numpy as np
import pytest
from corpus_helpers import assert_refused, rewrite, truncate
from PIL import Image

from cxr_vitmae.data import CorpusError, label_names, load_cxr_dataset
from cxr_vitmae.data.nih import BoundingBox, NIHChestXray14Config, read_bounding_boxes, read_splits
from cxr_vitmae.models.chest_xray_labels import NIH_CHESTXRAY14_LABELS

HEADER_2017 = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
HEADER_2020 = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Sex,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"

# (file name, Finding Labels, view); patients 1-8 are train_val, 9-11 test.
ROWS = [
    ("00000001_000.png", "Cardiomegaly|Emphysema", "PA"),
    ("00000001_001.png", "No Finding", "AP"),
    ("00000002_000.png", "Effusion", "PA"),
    ("00000003_000.png", "Infiltration|Pleural_Thickening", "AP"),
    ("00000003_001.png", "Hernia", "PA"),
    ("00000004_000.png", "No Finding", "PA"),
    ("00000005_000.png", "Mass|Nodule", "AP"),
    ("00000006_000.png", "Pneumonia", "PA"),
    ("00000007_000.png", "Pneumothorax|Consolidation", "PA"),
    ("00000008_000.png", "Edema", "AP"),
    ("00000009_000.png", "Fibrosis", "PA"),
    ("00000010_000.png", "Atelectasis", "AP"),
    ("00000010_001.png", "Atelectasis|Effusion|Infiltration", "PA"),
    ("00000011_000.png", "No Finding", "PA"),
]
TEST_PATIENTS = {"00000009", "00000010", "00000011"}
BOXES = [
    ("00000010_000.png", "Atelectasis", "225.084745762712", "547.019216763771", "86.7796610169491", "79.1864406779661"),
    ("00000010_001.png", "Infiltrate", "10.5", "12.25", "8", "9"),
    ("00000010_001.png", "Effusion", "1", "2", "3", "4"),
]


def multi_hot(findings: str) -> list[float]:
    names = findings.split("|")
    return [float(label in names) for label in NIH_CHESTXRAY14_LABELS]


def write_png(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32), value, dtype=np.uint8), mode="L").save(path)


def make_nih(
    root: Path,
    *,
    version: str = "2017",
    layout: str = "flat",
    rows=ROWS,
    boxes=BOXES,
    split_files: bool = False,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if version == "2017":
        lines = [HEADER_2017]
        # The 2017 file's trailing comma on every line.
        suffix, name = ",", "Data_Entry_2017.csv"
    else:
        lines, suffix, name = [HEADER_2020], "", "Data_Entry_2017_v2020.csv"
    for index, (image, findings, view) in enumerate(rows):
        patient = int(image[:8])
        follow_up = int(image[9:12])
        lines.append(f"{image},{findings},{follow_up},{patient},{40 + index},M,{view},2500,2048,0.143,0.143{suffix}")
        folder = root / "images" if layout == "flat" else root / f"images_{1 + index % 2:03d}" / "images"
        write_png(folder / image, value=10 * index)
    (root / name).write_text("\n".join(lines) + "\n")
    train_val = [image for image, *_ in rows if image[:8] not in TEST_PATIENTS]
    test = [image for image, *_ in rows if image[:8] in TEST_PATIENTS]
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    if boxes:
        box_lines = [BBOX_HEADER] + [",".join(box) + ",,," for box in boxes]
        (root / "BBox_List_2017.csv").write_text("\n".join(box_lines) + "\n")
    if split_files:
        findings = {image: labels for image, labels, _ in rows}
        split_dir = root / "data_splits"
        split_dir.mkdir()
        members = {
            "train_official.txt": [n for n in train_val if n[:8] not in {"00000001", "00000002"}],
            "val_official.txt": [n for n in train_val if n[:8] in {"00000001", "00000002"}],
            "test_official.txt": test,
        }
        for file, names in members.items():
            text = "".join(f"{n} {' '.join(str(int(v)) for v in multi_hot(findings[n]))}\n" for n in names)
            (split_dir / file).write_text(text)
    return root


@pytest.fixture(scope="module")
def nih_dir(tmp_path_factory) -> Path:
    return make_nih(tmp_path_factory.mktemp("nih"))


def test_load_end_to_end(nih_dir, tmp_path):
    ds = load_cxr_dataset("nih-chestxray14", nih_dir, cache_dir=tmp_path / "cache", validation_fraction=0.25)
    assert set(ds) == {"train", "validation", "test"}
    # 8 train_val patients: round(0.25 * 8) = 2 carved out whole.
    assert len({*ds["validation"]["patient_id"]}) == 2
    assert len(ds["train"]) + len(ds["validation"]) == 10 and len(ds["test"]) == 4
    patients = {split: set(ds[split]["patient_id"]) for split in ds}
    assert not patients["train"] & patients["validation"]
    assert not (patients["train"] | patients["validation"]) & patients["test"]
    assert patients["test"] == TEST_PATIENTS

    expected = {image: (multi_hot(findings), view) for image, findings, view in ROWS}
    for split in ds:
        for example in ds[split].remove_columns("image"):
            labels, view = expected[example["image_id"]]
            assert example["labels"] == labels
            assert example["view"] == view
            assert example["patient_id"] == example["image_id"][:8]
    first = ds["test"][0]
    assert first["image"].size == (32, 32)
    assert label_names("nih-chestxray14") == list(NIH_CHESTXRAY14_LABELS)
    assert ds["test"].features["labels"].length == 14

    by_id = {example["image_id"]: example["boxes"] for example in ds["test"].remove_columns("image")}
    assert by_id["00000009_000.png"] == []
    assert by_id["00000010_000.png"] == [
        {
            "label": "Atelectasis",
            "x": 225.084745762712,
            "y": 547.019216763771,
            "w": 86.7796610169491,
            "h": 79.1864406779661,
        }
    ]
    assert [box["label"] for box in by_id["00000010_001.png"]] == ["Infiltration", "Effusion"]


def test_v2020_is_preferred_and_kaggle_layout(tmp_path):
    # Patient Sex, no trailing comma, images_0NN/images/; the 2017 file beside it says otherwise and is ignored.
    data_dir = make_nih(tmp_path / "nih", version="2020", layout="kaggle")
    stale = [(image, "Hernia" if image == "00000002_000.png" else findings, view) for image, findings, view in ROWS]
    make_nih(tmp_path / "old", rows=stale, boxes=None)
    (data_dir / "Data_Entry_2017.csv").write_bytes((tmp_path / "old" / "Data_Entry_2017.csv").read_bytes())
    assert not (data_dir / "images").exists() and len(list(data_dir.glob("images_00[12]/images/*.png"))) == 14

    splits = read_splits(data_dir, NIHChestXray14Config())
    records = {r.image_id: r for split in splits.values() for r in split}
    assert records["00000002_000.png"].labels == tuple(multi_hot("Effusion"))
    assert records["00000003_001.png"].path == data_dir / "images_001" / "images" / "00000003_001.png"

    explicit = read_splits(data_dir, NIHChestXray14Config(metadata_file="Data_Entry_2017.csv"))
    records = {r.image_id: r for split in explicit.values() for r in split}
    assert records["00000002_000.png"].labels == tuple(multi_hot("Hernia"))


def test_validation_carve_is_deterministic_and_seeded(nih_dir):
    def carve(**options):
        return {r.image_id for r in read_splits(nih_dir, NIHChestXray14Config(**options))["validation"]}

    assert carve(validation_seed=3) == carve(validation_seed=3)
    assert len({frozenset(carve(validation_seed=seed)) for seed in range(8)}) > 1
    # Default 10 % of 8 patients rounds to 1 patient.
    default = read_splits(nih_dir)
    assert len({r.patient_id for r in default["validation"]}) == 1
    no_validation = read_splits(nih_dir, NIHChestXray14Config(validation_fraction=0))
    assert set(no_validation) == {"train", "test"} and len(no_validation["train"]) == 10


def test_views_filter(nih_dir):
    pa = read_splits(nih_dir, NIHChestXray14Config(views="PA", validation_fraction=0))
    assert {r.view for split in pa.values() for r in split} == {"PA"}
    assert [r.image_id for r in pa["test"]] == ["00000009_000.png", "00000010_001.png", "00000011_000.png"]
    ap = read_splits(nih_dir, NIHChestXray14Config(views=["ap"], validation_fraction=0))
    assert sum(len(split) for split in ap.values()) == sum(view == "AP" for *_, view in ROWS)
    with pytest.raises(CorpusError, match="views"):
        NIHChestXray14Config(views=["LATERAL"])


def test_read_bounding_boxes(nih_dir, tmp_path):
    boxes = read_bounding_boxes(nih_dir)
    assert boxes["00000010_001.png"] == [
        BoundingBox("Infiltration", 10.5, 12.25, 8.0, 9.0),
        BoundingBox("Effusion", 1, 2, 3, 4),
    ]
    assert math.isclose(boxes["00000010_000.png"][0].x, 225.084745762712)
    assert read_bounding_boxes(tmp_path) == {}


def test_split_files(tmp_path):
    data_dir = make_nih(tmp_path / "nih", split_files=True)
    splits = read_splits(data_dir, NIHChestXray14Config(split_files_dir="data_splits"))
    assert {r.patient_id for r in splits["validation"]} == {"00000001", "00000002"}
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [7, 3, 4]
    ds = load_cxr_dataset(
        "nih-chestxray14", data_dir, cache_dir=tmp_path / "cache", split_files_dir=str(data_dir / "data_splits")
    )
    assert ds["validation"]["image_id"] == ["00000001_000.png", "00000001_001.png", "00000002_000.png"]

    # One label flipped in the validation file: the file and its line are named.
    val = data_dir / "data_splits" / "val_official.txt"
    lines = val.read_text().splitlines()
    lines[2] = "00000002_000.png " + " ".join(["0"] * 14)
    val.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=r"val_official\.txt, line 3: .*00000002_000\.png.*Effusion 0 vs 1"):
        read_splits(data_dir, NIHChestXray14Config(split_files_dir="data_splits"))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (
            lambda d: [(d / "images" / n).unlink() for n in ("00000004_000.png", "00000009_000.png")],
            r"2 of 14 image\(s\) listed in Data_Entry_2017\.csv are missing .*00000004_000\.png, 00000009_000\.png",
        ),
        (
            lambda d: rewrite(d / "Data_Entry_2017.csv", "Follow-up #,", ""),
            r"Data_Entry_2017\.csv: header mismatch: expected columns \['Image Index', 'Finding Labels', "
            r"'Follow-up #'.*found \['Image Index', 'Finding Labels', 'Patient ID'",
        ),
        (
            lambda d: rewrite(d / "Data_Entry_2017.csv", "Mass|Nodule", "Mass|Nodules"),
            r"Data_Entry_2017\.csv, line 8, column 'Finding Labels': unknown label 'Nodules'",
        ),
        (
            lambda d: rewrite(d / "Data_Entry_2017.csv", "Hernia,", "Hernia|No Finding,"),
            r"line 6, column 'Finding Labels': 'No Finding' must stand alone",
        ),
        (
            # Cut short as by an interrupted download: the header opens, the pixels would fail mid-epoch.
            lambda d: truncate(d / "images" / "00000006_000.png", 20),
            r"1 image\(s\) listed in .* or are truncated: .*00000006_000\.png",
        ),
        (
            lambda d: (d / "images" / "00000006_000.png").write_bytes(b"not a png"),
            r"1 image\(s\) listed in .* or are truncated: .*00000006_000\.png",
        ),
        (
            lambda d: rewrite(d / "Data_Entry_2017.csv", "0.143,0.143,\n", "0.143,0.143,7\n"),
            r"Data_Entry_2017\.csv, line 2: more fields than the 11 columns",
        ),
        (
            lambda d: rewrite(d / "test_list.txt", "00000009_000.png", "00000001_001.png\n00000009_000.png"),
            r"1 image\(s\) are in both train_val_list\.txt and test_list\.txt: 00000001_001\.png",
        ),
        (
            lambda d: rewrite(
                d / "Data_Entry_2017.csv", "00000011_000.png,No Finding,0,11,", "00000011_000.png,No Finding,0,1,"
            ),
            r"1 patient\(s\) have images in both the train and the test split \(patient leakage\): 00000001",
        ),
        (
            lambda d: rewrite(d / "test_list.txt", "00000009_000.png", "00000099_000.png"),
            r"test_list\.txt: 1 image\(s\) are not in Data_Entry_2017\.csv: 00000099_000\.png",
        ),
        (
            lambda d: rewrite(d / "BBox_List_2017.csv", "Infiltrate", "Infiltrates"),
            r"BBox_List_2017\.csv, line 3, column 'Finding Label': unknown label 'Infiltrates'",
        ),
    ],
    ids=[
        "missing-image",
        "header",
        "unknown-label",
        "no-finding-not-alone",
        "truncated",
        "unreadable",
        "shifted-row",
        "list-overlap",
        "patient-leak",
        "unlisted-name",
        "box-label",
    ],
)
def test_corpus_errors(tmp_path, corrupt, message):
    config = NIHChestXray14Config(validation_fraction=0)
    assert_refused(make_nih(tmp_path / "nih"), corrupt, lambda d: read_splits(d, config), message)


def test_empty_split_and_missing_metadata(tmp_path):
    rows = [row for row in ROWS if row[0][:8] not in TEST_PATIENTS or row[2] == "AP"]
    data_dir = make_nih(tmp_path / "nih", rows=rows, boxes=BOXES[:1])
    with pytest.raises(CorpusError, match=r"the test split is empty \(1 image\(s\) before keeping views \['PA'\]\)"):
        load_cxr_dataset("nih-chestxray14", data_dir, cache_dir=tmp_path / "cache", views="PA")
    (data_dir / "Data_Entry_2017.csv").unlink()
    with pytest.raises(CorpusError, match=r"neither Data_Entry_2017_v2020\.csv nor Data_Entry_2017\.csv"):
        read_splits(data_dir)


def test_a_cached_build_still_refuses_images_deleted_since(tmp_path):
    # datasets reuses the cache (keyed on options and metadata files) without running the builder's checks again.
    data_dir = make_nih(tmp_path / "nih")
    first = load_cxr_dataset("nih-chestxray14", data_dir, cache_dir=tmp_path / "cache")
    again = load_cxr_dataset("nih-chestxray14", data_dir, cache_dir=tmp_path / "cache")
    assert again["train"].cache_files == first["train"].cache_files  # the cache was reused
    gone = data_dir / "images" / first["test"][0]["image_id"]
    gone.unlink()
    with pytest.raises(CorpusError, match=rf"1 of \d+ image\(s\) of the cached test split .* missing .*{gone.name}"):
        load_cxr_dataset("nih-chestxray14", data_dir, cache_dir=tmp_path / "cache")
