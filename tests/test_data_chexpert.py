"""The CheXpert builder on fixture corpora in Stanford's layouts, and the label-name canonicaliser."""

import math
from pathlib import Path

import datasets
import numpy as np
import pytest
from corpus_helpers import assert_refused, rewrite, truncate
from PIL import Image

from cxr_vitmae.data import CorpusError, label_names, load_cxr_dataset, split_source
from cxr_vitmae.data.chexpert import CHEXPERT_LABELS, CSV_COLUMNS, CheXpert, CheXpertConfig, read_splits
from cxr_vitmae.data.label_vocabulary import CANONICAL_LABELS, canonical_label, same_finding
from cxr_vitmae.models.chest_xray_labels import CHEXPERT_COMPETITION_LABELS, NIH_CHESTXRAY14_LABELS

NAN = float("nan")

# (Path below the prefix, Frontal/Lateral, AP/PA, {label: value}); labels not named are blank, as in train.csv.
TRAIN = [
    (
        "train/patient00001/study1/view1_frontal.jpg",
        "Frontal",
        "AP",
        {"Cardiomegaly": -1, "Edema": -1, "Atelectasis": 1, "Pleural Effusion": 0, "Lung Opacity": -1},
    ),
    ("train/patient00001/study1/view2_lateral.jpg", "Lateral", "", {"Cardiomegaly": 1, "Edema": 0, "Atelectasis": -1}),
    (
        "train/patient00002/study1/view1_frontal.jpg",
        "Frontal",
        "PA",
        {"Edema": 0, "Consolidation": -1, "Atelectasis": -1, "Pleural Effusion": -1, "Fracture": -1},
    ),
    ("train/patient00003/study1/view1_frontal.jpg", "Frontal", "AP", {"No Finding": 1}),
    (
        "train/patient00004/study1/view1_frontal.jpg",
        "Frontal",
        "PA",
        {"Cardiomegaly": 0, "Pleural Effusion": 1, "Support Devices": 1},
    ),
]
# valid.csv: every column 0/1.
VALID = [
    ("valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP", {"Cardiomegaly": 1}),
    ("valid/patient64542/study1/view1_frontal.jpg", "Frontal", "PA", {"Edema": 1, "Pleural Effusion": 1}),
    ("valid/patient64542/study1/view2_lateral.jpg", "Lateral", "", {}),
]
TEST = [
    ("test/patient64741/study1/view1_frontal.jpg", {"Atelectasis": 1}),
    ("test/patient64742/study1/view1_frontal.jpg", {"Consolidation": 1}),
    ("test/patient64742/study1/view2_lateral.jpg", {}),
]
PREFIX = "CheXpert-v1.0-small"
# The split policy these fixtures were written for: validation = valid.csv, test = CheXlocalize's test_labels.csv.
LOCALIZE = CheXpertConfig(test_split="chexlocalize")


def cell(value) -> str:
    return "" if value is None else f"{float(value):.1f}"


def write_jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32), 120, dtype=np.uint8), mode="L").save(path, quality=90)


def make_chexpert(data_dir: Path, *, prefix: str = PREFIX, test: str | None = "inside") -> Path:
    """`test`: "inside" puts test_labels.csv and test/ in the prefix folder, "outside" next to it (CheXlocalize),
    "prefixed-outside" the CSV next to it with `<prefix>/test/...` paths and test/ inside it."""
    root = data_dir / prefix
    root.mkdir(parents=True)
    for name, rows, blank in (("train.csv", TRAIN, None), ("valid.csv", VALID, 0)):
        lines = [",".join(CSV_COLUMNS)]
        for path, orientation, position, values in rows:
            labels = [cell(values.get(label, blank)) for label in CHEXPERT_LABELS]
            lines.append(",".join([f"{prefix}/{path}", "Female", "68", orientation, position, *labels]))
            write_jpeg(root / path)
        (root / name).write_text("\n".join(lines) + "\n")
    if test is not None:
        base = root if test == "inside" else data_dir
        lines = [",".join(["Path", *CHEXPERT_LABELS])]
        for path, values in TEST:
            listed = f"{prefix}/{path}" if test == "prefixed-outside" else path
            lines.append(",".join([listed, *(cell(values.get(label, 0)) for label in CHEXPERT_LABELS)]))
            write_jpeg((root if test == "prefixed-outside" else base) / path)
        (base / "test_labels.csv").write_text("\n".join(lines) + "\n")
    return data_dir


def by_id(split) -> dict:
    return {record.image_id: record for record in split}


def assert_labels(actual, expected) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert (math.isnan(a) and math.isnan(e)) or a == e, (actual, expected)


@pytest.fixture(scope="module")
def chexpert_dir(tmp_path_factory) -> Path:
    return make_chexpert(tmp_path_factory.mktemp("chexpert"))


def test_load_end_to_end_with_paper_defaults(chexpert_dir, tmp_path):
    ds = load_cxr_dataset("chexpert", chexpert_dir, cache_dir=tmp_path / "cache", test_split="chexlocalize")
    assert {split: len(ds[split]) for split in ds} == {"train": 4, "validation": 2, "test": 2}
    assert label_names("chexpert") == list(CHEXPERT_COMPETITION_LABELS)
    assert list(CHEXPERT_COMPETITION_LABELS) == [
        "Cardiomegaly",
        "Edema",
        "Consolidation",
        "Atelectasis",
        "Pleural Effusion",
    ]
    train = {example["image_id"]: example for example in ds["train"].remove_columns("image")}
    # U-Ones for Edema and Atelectasis, U-Zeros for the rest, blank -> 0.
    assert train["train/patient00001/study1/view1_frontal.jpg"]["labels"] == [0, 1, 0, 1, 0]
    assert train["train/patient00002/study1/view1_frontal.jpg"]["labels"] == [0, 0, 0, 1, 0]
    assert train["train/patient00003/study1/view1_frontal.jpg"]["labels"] == [0, 0, 0, 0, 0]
    assert train["train/patient00004/study1/view1_frontal.jpg"]["labels"] == [0, 0, 0, 0, 1]
    first = train["train/patient00001/study1/view1_frontal.jpg"]
    assert (first["patient_id"], first["view"]) == ("patient00001", "AP")
    assert ds["validation"]["labels"] == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 1]]
    assert ds["test"]["labels"] == [[0, 0, 0, 1, 0], [0, 0, 1, 0, 0]]
    assert ds["test"]["view"] == ["FRONTAL", "FRONTAL"]
    assert ds["test"]["image_id"][0] == "test/patient64741/study1/view1_frontal.jpg"
    assert ds["train"][0]["image"].size == (32, 32)
    patients = {split: set(ds[split]["patient_id"]) for split in ds}
    assert not patients["train"] & patients["validation"] and not patients["validation"] & patients["test"]


def test_default_reports_on_valid_csv_and_carves_validation_from_train(tmp_path):
    """The paper's CheXpert numbers are on valid.csv: by default it is `test`, and `validation` is a patient-disjoint
    carve of train.csv, the same whatever the row order, different for another seed."""
    data_dir = make_chexpert(tmp_path / "chexpert")
    valid_ids = [path for path, orientation, _, _ in VALID if orientation == "Frontal"]
    train_ids = [path for path, orientation, _, _ in TRAIN if orientation == "Frontal"]
    splits = read_splits(data_dir, CheXpertConfig(validation_fraction=0.5))
    assert [record.image_id for record in splits["test"]] == valid_ids  # test_labels.csv is present and not read
    assert sorted(r.image_id for split in ("train", "validation") for r in splits[split]) == sorted(train_ids)
    patients = {split: {record.patient_id for record in records} for split, records in splits.items()}
    assert len(patients["validation"]) == 2 and not patients["validation"] & patients["train"]

    # Deterministic: the same patients from a copy whose train.csv rows are in reverse order.
    shuffled = make_chexpert(tmp_path / "reversed")
    train_csv = shuffled / PREFIX / "train.csv"
    header, *rows = train_csv.read_text().splitlines()
    train_csv.write_text("\n".join([header, *reversed(rows)]) + "\n")
    again = read_splits(shuffled, CheXpertConfig(validation_fraction=0.5))
    assert {r.patient_id for r in again["validation"]} == patients["validation"]
    carves = {
        frozenset(r.patient_id for r in read_splits(data_dir, CheXpertConfig(validation_seed=seed))["validation"])
        for seed in range(8)
    }
    assert len(carves) > 1

    loaded = load_cxr_dataset("chexpert", data_dir, cache_dir=tmp_path / "cache")
    assert loaded["test"]["image_id"] == valid_ids
    assert split_source("chexpert", "test") == "valid.csv, the paper's CheXpert evaluation set"
    assert "valid.csv" in split_source("chexpert", "validation", test_split="chexlocalize")
    with pytest.raises(CorpusError, match="test_split='chexlocalize': no CheXlocalize test labels"):
        read_splits(make_chexpert(tmp_path / "no_test", test=None), LOCALIZE)
    with pytest.raises(CorpusError, match="test_split='hidden'"):
        CheXpertConfig(test_split="hidden")


def test_prefix_folder_itself_and_full_layout(chexpert_dir, tmp_path):
    direct = read_splits(chexpert_dir / PREFIX, LOCALIZE)
    assert {split: len(records) for split, records in direct.items()} == {"train": 4, "validation": 2, "test": 2}
    record = direct["train"][0]
    assert record.path == chexpert_dir / PREFIX / "train/patient00001/study1/view1_frontal.jpg"

    # Full layout, CheXlocalize's test_labels.csv and test/ beside the prefix folder.
    full = make_chexpert(tmp_path / "full", prefix="CheXpert-v1.0", test="outside")
    splits = read_splits(full, LOCALIZE)
    assert splits["test"][0].path == full / "test/patient64741/study1/view1_frontal.jpg"
    assert [r.image_id for r in splits["train"]] == [r.image_id for r in direct["train"]]

    # A test CSV beside the corpus folder whose paths carry the prefix: the prefix names the folder the images are in.
    prefixed = make_chexpert(tmp_path / "prefixed", prefix="CheXpert-v1.0", test="prefixed-outside")
    splits = read_splits(prefixed, LOCALIZE)
    assert splits["test"][0].path == prefixed / "CheXpert-v1.0/test/patient64741/study1/view1_frontal.jpg"
    assert [r.image_id for r in splits["test"]] == [r.image_id for r in direct["test"]]


def test_uncertainty_and_blank_policies(chexpert_dir):
    p1, p2, p3 = (f"train/patient0000{i}/study1/view1_frontal.jpg" for i in (1, 2, 3))

    ignore = by_id(read_splits(chexpert_dir, CheXpertConfig(test_split="chexlocalize", uncertainty="ignore"))["train"])
    assert_labels(ignore[p1].labels, [NAN, NAN, 0, 1, 0])
    assert_labels(ignore[p2].labels, [0, 0, NAN, NAN, NAN])

    blank = by_id(read_splits(chexpert_dir, CheXpertConfig(test_split="chexlocalize", blank="ignore"))["train"])
    assert_labels(blank[p1].labels, [0, 1, NAN, 1, 0])
    assert_labels(blank[p3].labels, [NAN] * 5)

    # A mapping overrides the paper's map class by class: Atelectasis and Edema stay U-Ones.
    override = by_id(
        read_splits(chexpert_dir, CheXpertConfig(test_split="chexlocalize", uncertainty={"Cardiomegaly": "ones"}))[
            "train"
        ]
    )
    assert_labels(override[p1].labels, [1, 1, 0, 1, 0])
    zeros = by_id(
        read_splits(
            chexpert_dir, CheXpertConfig(test_split="chexlocalize", uncertainty={"Edema": "zeros", "Effusion": "ones"})
        )["train"]
    )
    assert_labels(zeros[p1].labels, [0, 0, 0, 1, 0])
    assert_labels(zeros[p2].labels, [0, 0, 0, 1, 1])

    assert label_names("chexpert", tasks="all") == list(CHEXPERT_LABELS)
    everything = by_id(
        read_splits(
            chexpert_dir, CheXpertConfig(test_split="chexlocalize", tasks="all", uncertainty={"Fracture": "ignore"})
        )["train"]
    )
    expected = dict.fromkeys(CHEXPERT_LABELS, 0.0) | {"Edema": 0.0, "Atelectasis": 1.0, "Fracture": NAN}
    assert_labels(everything[p2].labels, [expected[label] for label in CHEXPERT_LABELS])
    # Lung Opacity -1 is named nowhere: U-Zeros.
    assert everything[p1].labels[CHEXPERT_LABELS.index("Lung Opacity")] == 0.0

    with pytest.raises(CorpusError, match="'ones', 'zeros', 'ignore'"):
        CheXpertConfig(uncertainty={"Edema": "maybe"})
    with pytest.raises(CorpusError, match="Hernia"):
        CheXpertConfig(uncertainty={"Hernia": "ones"})
    with pytest.raises(CorpusError, match="blank"):
        CheXpertConfig(blank="ones")


def test_views(chexpert_dir, tmp_path):
    every = read_splits(chexpert_dir, CheXpertConfig(test_split="chexlocalize", views="all"))
    assert {split: len(records) for split, records in every.items()} == {"train": 5, "validation": 3, "test": 3}
    lateral = read_splits(chexpert_dir, CheXpertConfig(test_split="chexlocalize", views="lateral"))
    assert [r.view for split in lateral.values() for r in split] == ["LATERAL"] * 3

    with pytest.raises(CorpusError, match=r"test_labels\.csv: has no AP/PA column"):
        read_splits(chexpert_dir, CheXpertConfig(test_split="chexlocalize", views=["PA"]))
    no_test = make_chexpert(tmp_path / "no_test", test=None)
    pa = read_splits(no_test, CheXpertConfig(views=["pa"], validation_fraction=0))
    assert set(pa) == {"train", "test"}
    assert [r.image_id for r in pa["train"]] == [
        "train/patient00002/study1/view1_frontal.jpg",
        "train/patient00004/study1/view1_frontal.jpg",
    ]
    with pytest.raises(CorpusError, match="views"):
        CheXpertConfig(views=["OBLIQUE"])


def test_config_hashes_and_options_key_the_cache(chexpert_dir, tmp_path):
    config = CheXpertConfig(uncertainty={"Edema": "ignore"})
    assert datasets.fingerprint.Hasher.hash(config) != datasets.fingerprint.Hasher.hash(CheXpertConfig())
    one = CheXpert(data_dir=str(chexpert_dir), cache_dir=str(tmp_path), uncertainty={"Edema": "ignore"})
    other = CheXpert(data_dir=str(chexpert_dir), cache_dir=str(tmp_path), uncertainty={"Edema": "ones"})
    assert one.config_id != other.config_id

    cache = tmp_path / "cache"
    first = load_cxr_dataset("chexpert", chexpert_dir, cache_dir=cache, uncertainty="ignore")
    second = load_cxr_dataset("chexpert", chexpert_dir, cache_dir=cache, uncertainty="ones")
    assert math.isnan(first["train"][0]["labels"][0]) and second["train"][0]["labels"][0] == 1.0


ROOT = PREFIX


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (
            lambda d: rewrite(d / ROOT / "train.csv", "Lateral,,,,1.0", "Lateral,,,,2.0"),
            r"train\.csv, line 3, column 'Cardiomegaly': label value '2\.0'; expected 1, 0, -1 \(uncertain\) or blank",
        ),
        (
            lambda d: rewrite(d / ROOT / "train.csv", "Lateral,,,,1.0", "Lateral,,,,yes"),
            r"train\.csv, line 3, column 'Cardiomegaly': label value 'yes'",
        ),
        (
            lambda d: rewrite(d / ROOT / "valid.csv", "Path,Sex,", "Path,"),
            r"valid\.csv: header mismatch: expected columns \['Path', 'Sex', 'Age'.*found \['Path', 'Age'",
        ),
        (
            lambda d: rewrite(d / ROOT / "test_labels.csv", "Path,No Finding", "Path,Sex,No Finding"),
            r"test_labels\.csv: header mismatch: expected columns \['Path', 'No Finding'",
        ),
        (
            lambda d: (d / ROOT / "train/patient00004/study1/view1_frontal.jpg").unlink(),
            r"1 of 8 image\(s\) listed in .* are missing: .*train/patient00004/study1/view1_frontal\.jpg",
        ),
        (
            # Cut short as by an interrupted download: the header opens, the pixels would fail mid-epoch.
            # the fixture's 32x32 JPEG has only a few bytes of scan data
            lambda d: truncate(d / ROOT / "valid/patient64541/study1/view1_frontal.jpg", 4),
            r"1 image\(s\) listed in .* or are truncated: .*valid/patient64541/study1/view1_frontal\.jpg",
        ),
        (
            lambda d: (d / ROOT / "valid/patient64541/study1/view1_frontal.jpg").write_bytes(b"\xff\xd8 truncated"),
            r"1 image\(s\) listed in .* or are truncated: .*valid/patient64541/study1/view1_frontal\.jpg",
        ),
        (
            lambda d: rewrite(d / ROOT / "valid.csv", "valid/patient64541/", "train/patient00003/"),
            r"1 patient\(s\) have images in both the train and the validation split \(patient leakage\): patient00003",
        ),
        (
            lambda d: rewrite(d / ROOT / "train.csv", "Lateral,,", "Sideways,,"),
            r"train\.csv, line 3, column 'Frontal/Lateral': 'Sideways'; expected Frontal or Lateral",
        ),
        (
            lambda d: rewrite(d / ROOT / "valid.csv", "Frontal,", "Lateral,", count=2),
            r"valid\.csv: no image left after keeping views='frontal'",
        ),
        (
            lambda d: (d / "CheXpert-v1.0").mkdir(),
            r"holds both CheXpert-v1\.0-small and CheXpert-v1\.0",
        ),
        (
            lambda d: rewrite(
                d / ROOT / "train.csv",
                "00004/study1/view1_frontal.jpg,Female",
                "00004/study1/view1_frontal.jpg,Female,68",
            ),
            r"train\.csv, line 6: more fields than the 19 columns",
        ),
    ],
    ids=[
        "bad-value",
        "non-numeric",
        "header",
        "test-header",
        "missing-image",
        "truncated",
        "unreadable",
        "patient-leak",
        "orientation",
        "empty-split",
        "two-layouts",
        "shifted-row",
    ],
)
def test_corpus_errors(tmp_path, corrupt, message):
    assert_refused(make_chexpert(tmp_path / "chexpert"), corrupt, lambda d: read_splits(d, LOCALIZE), message)


def test_label_vocabulary():
    assert canonical_label("Effusion") == "Pleural Effusion"
    assert canonical_label("pleural_thickening") == canonical_label("Pleural Thickening") == "Pleural Thickening"
    assert same_finding("Infiltrate", "infiltration")
    assert same_finding("Airspace Opacity", "LUNG  OPACITY")
    assert same_finding("Effusion", "Pleural Effusion")
    assert not same_finding("Mass", "Nodule")
    assert canonical_label("covid-19") == "COVID-19"
    # Every corpus's own names are known.
    for name in (*NIH_CHESTXRAY14_LABELS, *CHEXPERT_LABELS):
        assert canonical_label(name) in CANONICAL_LABELS
    assert len({canonical_label(name) for name in (*NIH_CHESTXRAY14_LABELS, *CHEXPERT_LABELS)}) == 21
    with pytest.raises(CorpusError, match=r"Unknown finding 'Pleural Efusion'; did you mean 'Pleural Effusion'"):
        canonical_label("Pleural Efusion")
    with pytest.raises(CorpusError, match="Unknown finding 'normal'"):
        same_finding("normal", "No Finding")
