"""Phantoms in CheXpert's, MIMIC-CXR-JPG's and COVIDx's on-disk layouts: the files as those corpora distribute them,
labels that follow the findings drawn, read back by the real builders, deterministic, and the `phantoms --layout`
command. Split-agnostic where the readers' split policies may change: images are compared over all splits."""

import gzip
import io
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_vitmae.cli import main
from cxr_vitmae.data import load_cxr_dataset
from cxr_vitmae.data.covidx import COVIDxConfig
from cxr_vitmae.data.mimic import MIMIC_CXR_LABELS
from cxr_vitmae.data.phantoms import (
    LAYOUT_CORPORA,
    PHANTOM_RECORD,
    TEST_FRACTION,
    generate_phantoms,
    phantom_record,
    write_phantom_layout,
)
from cxr_vitmae.data.phantoms.layout_files import LABELER_PREVALENCE, plan_layout
from cxr_vitmae.data.phantoms.plan import plan_corpus
from cxr_vitmae.data.phantoms.render import render

SIZE = 48
# The published layouts, restated here rather than imported from the readers.
CHEXPERT_LABELS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]  # fmt: skip
CHEXPERT_COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
COMPETITION = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
MIMIC_METADATA_COLUMNS = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]  # fmt: skip
# NIH finding -> what a CheXpert-labelled report of it says, as the task states it.
REPORTED = {
    "Atelectasis": {"Atelectasis"},
    "Cardiomegaly": {"Cardiomegaly"},
    "Effusion": {"Pleural Effusion"},
    "Infiltration": {"Lung Opacity"},
    "Mass": {"Lung Lesion"},
    "Nodule": {"Lung Lesion"},
    "Pneumonia": {"Pneumonia", "Lung Opacity"},
    "Pneumothorax": {"Pneumothorax"},
    "Consolidation": {"Consolidation", "Lung Opacity"},
    "Edema": {"Edema", "Lung Opacity"},
    "Fibrosis": {"Lung Opacity"},
    "Pleural_Thickening": {"Pleural Other"},
}
# CheXpert train.csv: share of 1 or -1 per competition task (reference counts over 223,414 rows).
CHEXPERT_RATES = {
    "Atelectasis": (33_376 + 33_739) / 223_414,
    "Cardiomegaly": (27_000 + 8_087) / 223_414,
    "Consolidation": (14_783 + 27_742) / 223_414,
    "Edema": (52_246 + 12_984) / 223_414,
    "Effusion": (86_187 + 11_628) / 223_414,
}
COVIDX_SOURCES = {"cohen", "fig1", "actmed", "sirm", "ricord", "rsna", "stonybrook", "bimcv"}
COVIDX_FILES = [
    "train_COVIDx9A.txt", "test_COVIDx9A.txt", "train_COVIDx9B.txt", "test_COVIDx9B.txt", "train.txt", "val.txt",
    "test.txt",
]  # fmt: skip
# The metadata files each layout writes, next to its images and the generator's record.
METADATA_FILES = {
    "chexpert": {"CheXpert-v1.0-small/train.csv", "CheXpert-v1.0-small/valid.csv"},
    "mimic-cxr": {f"mimic-cxr-2.0.0-{name}.csv.gz" for name in ("metadata", "split", "chexpert", "negbio")}
    | {"IMAGE_FILENAMES"},
    "covidx": set(COVIDX_FILES),
}


def _read_csv(source) -> pd.DataFrame:
    return pd.read_csv(source, dtype=str, keep_default_na=False)


def _files(root: Path) -> dict[Path, bytes]:
    return {path.relative_to(root): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _reported(findings) -> set[str]:
    return set().union(*(REPORTED[finding] for finding in findings))


def _decoded(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L" and image.size == (SIZE, SIZE)
        return np.asarray(image, dtype=np.float64)


def _image_ids(dataset) -> list[str]:
    return [image_id for split in dataset.values() for image_id in split["image_id"]]


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory):
    return write_phantom_layout(tmp_path_factory.mktemp("chexpert"), 120, layout="chexpert", size=SIZE, seed=3)


@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    return write_phantom_layout(tmp_path_factory.mktemp("mimic"), 100, layout="mimic-cxr", size=SIZE, seed=5)


@pytest.fixture(scope="module")
def covidx(tmp_path_factory):
    return write_phantom_layout(tmp_path_factory.mktemp("covidx"), 120, layout="covidx", size=SIZE, seed=7)


@pytest.fixture(scope="module")
def chexpert_csv(chexpert):
    root = chexpert.output_dir / "CheXpert-v1.0-small"
    return {split: _read_csv(root / f"{split}.csv") for split in ("train", "valid")}


# --------------------------------------------------------------------------------------------------------------------
# CheXpert


def test_chexpert_files_read_like_chexpert(chexpert, chexpert_csv):
    out = chexpert.output_dir
    listed = []
    for split, frame in chexpert_csv.items():
        assert list(frame.columns) == CHEXPERT_COLUMNS
        pattern = rf"CheXpert-v1\.0-small/{split}/patient\d{{5}}/study\d+/view(1_frontal|2_lateral)\.jpg"
        assert frame["Path"].str.fullmatch(pattern).all()
        assert set(frame["Sex"]) == {"Male", "Female"} and frame["Age"].str.fullmatch(r"\d+").all()
        assert set(frame["Frontal/Lateral"]) == {"Frontal", "Lateral"}, split
        frontal = frame["Frontal/Lateral"] == "Frontal"
        assert set(frame.loc[frontal, "AP/PA"]) == {"AP", "PA"} and set(frame.loc[~frontal, "AP/PA"]) == {""}
        assert (frame["Path"].str.endswith("_frontal.jpg") == frontal).all()
        listed += frame["Path"].tolist()
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.jpg"))
    assert sorted(listed) == written == sorted(image.path for image in chexpert.images)
    for path in written[::15]:
        _decoded(out / path)
    # valid.csv's patients are numbered after train.csv's
    numbers = {split: {int(p.split("/")[2][7:]) for p in frame["Path"]} for split, frame in chexpert_csv.items()}
    assert max(numbers["train"]) < min(numbers["valid"])
    assert phantom_record(out) == {"generator": "cxr-vitmae phantoms", "layout": "chexpert", "num_images": 120,
                                   "size": SIZE, "seed": 3, "difficulty": 0.5}  # fmt: skip


def test_chexpert_cells_are_the_labelers_in_train_and_consensus_in_valid(chexpert_csv):
    train, valid = (chexpert_csv[split][CHEXPERT_LABELS] for split in ("train", "valid"))
    assert set(np.unique(train.to_numpy())) == {"1.0", "0.0", "-1.0", ""}
    assert set(np.unique(valid.to_numpy())) == {"1.0", "0.0"}
    for label in COMPETITION:  # the policies matter: each task has uncertain and blank cells, and positives
        assert {"1.0", "-1.0", ""} <= set(train[label]), label
    assert set(train["No Finding"]) == {"1.0", ""}


def test_chexpert_labels_follow_the_findings(chexpert, chexpert_csv):
    drawn = {image.path: image.findings for image in chexpert.images}
    positives = Counter()
    for split, frame in chexpert_csv.items():
        for _, row in frame.iterrows():
            findings = drawn[row["Path"]]
            assert not {"Emphysema", "Hernia"} & set(findings)
            reported = _reported(findings)
            for label in CHEXPERT_LABELS[1:]:
                cell = row[label]
                if split == "valid":
                    assert cell == ("1.0" if label in reported else "0.0"), (row["Path"], label)
                else:
                    assert cell in (("1.0", "-1.0") if label in reported else ("", "0.0", "-1.0")), (row["Path"], label)
                positives[split, label] += cell == "1.0"
            said = {label for label in CHEXPERT_LABELS[1:-1] if row[label] in ("1.0", "-1.0")}
            assert row["No Finding"] == ("1.0" if not said else "" if split == "train" else "0.0")
        # a study's frontal and lateral rows carry the same labels
        studies = frame.assign(study=frame["Path"].str.rsplit("/", n=1).str[0]).groupby("study")
        assert (studies[CHEXPERT_LABELS].nunique() == 1).all().all()
    assert all(positives["train", label] and positives["valid", label] for label in ("Pleural Effusion", "Edema"))


def test_chexpert_images_show_their_plan(chexpert):
    specs = plan_corpus(120, 3, LABELER_PREVALENCE)
    frontal = {image.plan_index: image for image in chexpert.images if image.view != "LATERAL"}
    laterals = [image for image in chexpert.images if image.view == "LATERAL"]
    assert laterals and len(frontal) == 120
    for image in laterals[:4]:
        rendered = render(specs[image.plan_index], SIZE, 0.5, 3)[0].astype(np.float64)
        written = _decoded(chexpert.output_dir / frontal[image.plan_index].path)
        other = render(specs[(image.plan_index + 1) % 120], SIZE, 0.5, 3)[0]
        assert np.abs(written - rendered).mean() < 3 < np.abs(written - other).mean()
        assert frontal[image.plan_index].findings == specs[image.plan_index].findings
        # the lateral stand-in: both halves of the film superimposed, so symmetric and unlike the frontal
        lateral = _decoded(chexpert.output_dir / image.path)
        assert np.abs(lateral - (rendered + rendered[:, ::-1]) / 2).mean() < 3
        assert np.abs(lateral - written).mean() > 3


def test_chexpert_read_by_the_builder(chexpert, chexpert_csv):
    paths = pd.concat(list(chexpert_csv.values()))
    below_prefix = paths["Path"].str.removeprefix("CheXpert-v1.0-small/")
    frontal = paths["Frontal/Lateral"] == "Frontal"
    default = load_cxr_dataset("chexpert", chexpert.output_dir)
    assert sorted(_image_ids(default)) == sorted(below_prefix[frontal])
    patient = {image.path.removeprefix("CheXpert-v1.0-small/"): image.patient_id for image in chexpert.images}
    for split in default.values():
        assert all(
            patient[image_id] == row for image_id, row in zip(split["image_id"], split["patient_id"], strict=True)
        )
        assert set(split["view"]) <= {"AP", "PA"} and not np.isnan(np.asarray(split["labels"])).any()

    every = load_cxr_dataset(
        "chexpert", chexpert.output_dir, views="all", tasks="all", uncertainty="ignore", blank="ignore"
    )
    assert sorted(_image_ids(every)) == sorted(below_prefix)
    cells = dict(zip(below_prefix, paths[CHEXPERT_LABELS].to_numpy().tolist(), strict=True))
    value = {"1.0": 1.0, "0.0": 0.0, "-1.0": math.nan, "": math.nan}
    for split in every.values():
        for image_id, labels, view in zip(split["image_id"], split["labels"], split["view"], strict=True):
            expected = [value[cell] for cell in cells[image_id]]
            assert np.array_equal(np.asarray(labels), np.asarray(expected), equal_nan=True), image_id
            assert (view == "LATERAL") == image_id.endswith("_lateral.jpg")
            # valid.csv is 0/1: nothing unknown there, whatever split reads it
            assert image_id.startswith("train/") or not math.isnan(sum(labels))
    assert math.isnan(sum(sum(labels) for split in every.values() for labels in split["labels"]))


# --------------------------------------------------------------------------------------------------------------------
# MIMIC-CXR-JPG


def test_mimic_files_read_like_mimic(mimic):
    out = mimic.output_dir
    metadata = _read_csv(out / "mimic-cxr-2.0.0-metadata.csv.gz")
    splits = _read_csv(out / "mimic-cxr-2.0.0-split.csv.gz")
    assert list(metadata.columns) == MIMIC_METADATA_COLUMNS
    assert list(splits.columns) == ["dicom_id", "study_id", "subject_id", "split"]
    assert metadata["subject_id"].str.fullmatch(r"1\d{7}").all() and metadata["study_id"].str.fullmatch(r"5\d{7}").all()
    assert metadata["dicom_id"].str.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}").all() and metadata["dicom_id"].is_unique
    assert set(metadata["ViewPosition"]) == {"AP", "PA", "LATERAL"}
    assert (metadata[["Rows", "Columns"]] == str(SIZE)).all().all()
    paths = [f"files/p{s[:2]}/p{s}/s{t}/{d}.jpg" for d, s, t in metadata[["dicom_id", "subject_id", "study_id"]].values]
    written = sorted(path.relative_to(out).as_posix() for path in (out / "files").rglob("*.jpg"))
    assert sorted(paths) == written == (out / "IMAGE_FILENAMES").read_text().splitlines()
    assert splits.merge(metadata, on=["dicom_id", "study_id", "subject_id"]).shape[0] == len(metadata)
    # patient-disjoint splits, all three filled; every study has one frontal image
    assert set(splits["split"]) == {"train", "validate", "test"}
    assert (splits.groupby("subject_id")["split"].nunique() == 1).all()
    frontal = metadata[metadata["ViewPosition"] != "LATERAL"]
    assert frontal["study_id"].is_unique and set(frontal["study_id"]) == set(metadata["study_id"])
    # dates in MIMIC's shifted century, increasing over a patient's studies
    assert metadata["StudyDate"].str.fullmatch(r"21\d{6}").all()
    plan_index = {Path(image.path).stem: image.plan_index for image in mimic.images}
    dated = frontal.assign(index=frontal["dicom_id"].map(plan_index))
    for _, studies in dated.sort_values("index").groupby("subject_id"):
        assert studies["StudyDate"].is_monotonic_increasing
    for image in mimic.images[::10]:
        pixels = _decoded(out / image.path)
        assert pixels.max() == 255  # histogram-equalised, as MIMIC-CXR-JPG's


def test_mimic_labels_per_study_follow_the_findings(mimic):
    out = mimic.output_dir
    findings = {Path(image.path).parent.name[1:]: image.findings for image in mimic.images}
    tables = {name: _read_csv(out / f"mimic-cxr-2.0.0-{name}.csv.gz") for name in ("chexpert", "negbio")}
    for table in tables.values():
        assert list(table.columns[:2]) == ["subject_id", "study_id"]
        assert sorted(table.columns[2:]) == sorted(CHEXPERT_LABELS)
        assert sorted(table["study_id"]) == sorted(findings)
        for _, row in table.iterrows():
            reported = _reported(findings[row["study_id"]])
            for label in CHEXPERT_LABELS[1:]:
                assert row[label] in (("1.0", "-1.0") if label in reported else ("", "0.0", "-1.0")), label
    # the two labelers read the same findings but not cell for cell alike
    assert not tables["chexpert"].equals(tables["negbio"])


def test_mimic_read_by_the_builder(mimic):
    out = mimic.output_dir
    metadata = _read_csv(out / "mimic-cxr-2.0.0-metadata.csv.gz")
    splits = _read_csv(out / "mimic-cxr-2.0.0-split.csv.gz").set_index("dicom_id")["split"]
    default = load_cxr_dataset("mimic-cxr", out)
    frontal = metadata[metadata["ViewPosition"] != "LATERAL"]
    assert sorted(_image_ids(default)) == sorted(frontal["dicom_id"])
    names = {"train": "train", "validation": "validate", "test": "test"}
    labels = _read_csv(out / "mimic-cxr-2.0.0-chexpert.csv.gz").set_index("study_id")
    study = dict(zip(metadata["dicom_id"], metadata["study_id"], strict=True))
    value = {"1.0": 1.0, "0.0": 0.0, "-1.0": math.nan, "": 0.0}  # the defaults: uncertain ignored, blank negative
    for split, rows in default.items():
        assert {splits[image_id] for image_id in rows["image_id"]} == {names[split]}
        for image_id, vector in zip(rows["image_id"], rows["labels"], strict=True):
            cells = labels.loc[study[image_id], list(MIMIC_CXR_LABELS)]
            assert np.array_equal(np.asarray(vector), [value[cell] for cell in cells], equal_nan=True)
    every = load_cxr_dataset("mimic-cxr", out, views="all")
    assert sorted(_image_ids(every)) == sorted(metadata["dicom_id"])


# --------------------------------------------------------------------------------------------------------------------
# COVIDx


def _label_file(path: Path) -> pd.DataFrame:
    lines = path.read_text().splitlines()
    assert lines and all(len(line.split(" ")) == 4 for line in lines)
    return pd.read_csv(path, sep=" ", header=None, names=["patient", "filename", "label", "source"], dtype=str)


def test_covidx_label_files_and_images(covidx):
    out = covidx.output_dir
    files = {name: _label_file(out / name) for name in COVIDX_FILES}
    classes = {"9A": {"normal", "pneumonia", "COVID-19"}, "9B": {"negative", "positive"}}
    for name, frame in files.items():
        assert set(frame["label"]) == classes["9A" if "9A" in name else "9B"], name
        assert set(frame["source"]) <= COVIDX_SOURCES and frame["filename"].is_unique
    # each image written once: CXR-4's three lists are the folders; 9A and 9B list its train and test images
    folders = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
    for folder, name in folders.items():
        assert sorted(p.name for p in (out / folder).iterdir()) == sorted(files[name]["filename"])
    for version in ("9A", "9B"):
        for split in ("train", "test"):
            assert (
                files[f"{split}_COVIDx{version}.txt"]["filename"].tolist() == files[f"{split}.txt"]["filename"].tolist()
            )
    # 9B and CXR-4 say positive exactly for 9A's COVID-19
    nine_a = pd.concat([files["train_COVIDx9A.txt"], files["test_COVIDx9A.txt"]]).set_index("filename")["label"]
    for name in ("train_COVIDx9B.txt", "test_COVIDx9B.txt", "train.txt", "test.txt"):
        frame = files[name]
        assert ((frame["label"] == "positive") == (frame["filename"].map(nine_a) == "COVID-19")).all()
    # a patient is (source, id): in one split only, one plan patient each, and of one class
    everything = pd.concat([files["train.txt"].assign(split="train"), files["val.txt"].assign(split="val"),
                            files["test.txt"].assign(split="test")])  # fmt: skip
    assert (everything.groupby(["source", "patient"])["split"].nunique() == 1).all()
    plan = {Path(image.path).name: image.plan_index for image in covidx.images}
    specs = plan_corpus(120, 7)
    everything["plan_patient"] = [specs[plan[name]].patient for name in everything["filename"]]
    assert (everything.groupby(["source", "patient"])["plan_patient"].nunique() == 1).all()
    assert (everything.groupby("plan_patient")[["source", "patient", "label"]].nunique() == 1).all().all()
    rsna = everything[everything["source"] == "rsna"]
    assert (rsna["filename"] == rsna["patient"] + ".png").all()


def test_covidx_images_are_drawn_for_their_class(covidx):
    drawn = {
        "normal": {()},
        "pneumonia": {("Pneumonia",), ("Consolidation",)},
        "COVID-19": {("Infiltration", "Fibrosis")},
    }
    for image in covidx.images:
        assert image.findings in drawn[image.label]
    assert {image.label for image in covidx.images} == set(drawn)
    # roughly 9A's proportions (8,085 / 5,555 / 16,490), on a large plan (nothing rendered)
    entries, _ = plan_layout("covidx", 4000, 1, SIZE)
    shares = Counter(entry.image.label for entry in entries)
    for label, count in {"normal": 8_085, "pneumonia": 5_555, "COVID-19": 16_490}.items():
        assert abs(shares[label] / len(entries) - count / 30_130) < 0.06, label


@pytest.mark.parametrize("version", ["9A", "9B", "CXR-4"])
def test_covidx_read_by_the_builder(covidx, version):
    out = covidx.output_dir
    dataset = load_cxr_dataset("covidx", out, version=version)
    names = {"9A": ("train_COVIDx9A.txt", "test_COVIDx9A.txt"), "9B": ("train_COVIDx9B.txt", "test_COVIDx9B.txt"),
             "CXR-4": ("train.txt", "val.txt", "test.txt")}[version]  # fmt: skip
    # 9B comes from the COVID-Net names even though CXR-4's train.txt sits next to them
    assert set(COVIDxConfig(covidx_version=version).label_files(out).values()) == set(names)
    listed = pd.concat([_label_file(out / name) for name in names])
    assert sorted(_image_ids(dataset)) == sorted(listed["filename"])
    classes = dataset["train"].features["label"].names
    label = dict(zip(listed["filename"], listed["label"], strict=True))
    for split in dataset.values():
        assert all(classes[index] == label[name] for name, index in zip(split["image_id"], split["label"], strict=True))
    if version == "CXR-4":
        assert sorted(dataset["validation"]["image_id"]) == sorted(_label_file(out / "val.txt")["filename"])


# --------------------------------------------------------------------------------------------------------------------
# All layouts


@pytest.mark.slow
def test_labeler_prevalence():
    """CheXpert-like rates for the 5 competition tasks, and enough positives of each in a few hundred phantoms."""
    plan = [set(spec.findings) for spec in plan_corpus(20_000, 0, LABELER_PREVALENCE)]
    for finding, rate in CHEXPERT_RATES.items():
        assert abs(sum(finding in findings for findings in plan) / len(plan) - rate) < 0.02, finding
    assert not any({"Emphysema", "Hernia"} & findings for findings in plan)
    for seed in range(3):
        specs = plan_corpus(300, seed, LABELER_PREVALENCE)
        for split in ("train_val", "test"):
            counts = Counter(finding for spec in specs if spec.split == split for finding in spec.findings)
            assert min(counts[finding] for finding in CHEXPERT_RATES) >= 3, (seed, split, counts)


@pytest.mark.parametrize("layout", ["chexpert", "mimic-cxr", "covidx"])
def test_same_seed_same_bytes_another_seed_differs(tmp_path, layout):
    first = write_phantom_layout(tmp_path / "a", 40, layout=layout, size=32, seed=11)
    again = write_phantom_layout(tmp_path / "b", 40, layout=layout, size=32, seed=11)
    other = write_phantom_layout(tmp_path / "c", 40, layout=layout, size=32, seed=12)
    assert first.images == again.images
    files = _files(tmp_path / "a")
    assert files == _files(tmp_path / "b")
    images = {Path(image.path) for image in first.images}
    assert set(files) == images | {Path(name) for name in METADATA_FILES[layout]} | {Path(PHANTOM_RECORD)}
    different = _files(tmp_path / "c")
    assert all(different[Path(name)] != files[Path(name)] for name in METADATA_FILES[layout])
    assert set(different) != set(files) or all(different[path] != files[path] for path in images)
    assert phantom_record(tmp_path / "c")["seed"] == 12 and other.seed == 12


def test_nih_layout_is_generate_phantoms(tmp_path):
    written = write_phantom_layout(tmp_path / "layout", 20, layout="nih", size=32, seed=4)
    generate_phantoms(tmp_path / "direct", 20, size=32, seed=4)
    assert _files(tmp_path / "layout") == _files(tmp_path / "direct")
    assert [s.name for s in written.splits] == ["train_val", "test"] and sum(s.images for s in written.splits) == 20
    assert "layout" not in phantom_record(tmp_path / "layout")  # NIH's files stay exactly what they were


def test_phantoms_command_writes_what_the_function_writes(tmp_path, capsys):
    for layout, test_fraction in (("mimic-cxr", 0.5), ("nih", TEST_FRACTION)):
        args = ["--num-images", "40", "--size", "32", "--seed", "4", "--difficulty", "easy"]
        if test_fraction != TEST_FRACTION:
            args += ["--test-fraction", str(test_fraction)]
        code = main(["phantoms", "--output", str(tmp_path / layout), "--layout", layout, *args])
        assert code == 0
        written = write_phantom_layout(tmp_path / f"{layout}-function", 40, layout=layout, size=32, seed=4,
                                       difficulty="easy", test_fraction=test_fraction)  # fmt: skip
        assert _files(tmp_path / layout) == _files(tmp_path / f"{layout}-function")
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 1 + len(written.splits) and LAYOUT_CORPORA[layout] in lines[0]
        for line, split in zip(lines[1:], written.splits, strict=True):
            files = ", ".join(split.listed_in)
            assert line.strip() == f"{split.name}: {split.images} images, {split.patients} patients ({files})"
    # bad input: one line naming the problem
    refused = [
        (["--layout", "chexpert", "--output", str(tmp_path / "mimic-cxr")], "holds mimic-cxr phantoms"),
        (["--layout", "covidx", "--output", str(tmp_path / "tiny"), "--num-images", "3"], "too few for the covidx"),
    ]
    for extra, message in refused:
        code = main(["phantoms", "--num-images", "40", "--size", "32", *extra])
        error = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(error) == 1 and message in error[0], error


@pytest.mark.parametrize("layout", ["chexpert", "mimic-cxr", "covidx"])
def test_test_fraction_sizes_the_held_out_split(tmp_path, layout):
    held_out = {"chexpert": "valid", "mimic-cxr": "test", "covidx": "test"}[layout]

    def held_out_share(written):  # of the planned (frontal) images, each counted once
        planned = {image.plan_index: image.split for image in written.images}
        return sum(split == held_out for split in planned.values()) / len(planned)

    default = write_phantom_layout(tmp_path / "default", 300, layout=layout, size=32, seed=2)
    large = write_phantom_layout(tmp_path / "large", 300, layout=layout, size=32, seed=2, test_fraction=0.6)
    assert held_out_share(default) < 0.3 < 0.6 <= held_out_share(large) < 0.7
    assert phantom_record(tmp_path / "large")["test_fraction"] == 0.6
    assert "test_fraction" not in phantom_record(tmp_path / "default")
    with pytest.raises(ValueError, match="test_fraction"):
        write_phantom_layout(tmp_path / "bad", 300, layout=layout, size=32, test_fraction=1.5)
    with pytest.raises(ValueError, match="too few for the .* layout at test_fraction=0.999"):
        write_phantom_layout(tmp_path / "tiny", 30, layout=layout, size=32, test_fraction=0.999)


def test_arguments_and_refusals(tmp_path):
    with pytest.raises(ValueError, match="layout 'padchest'"):
        write_phantom_layout(tmp_path, 10, layout="padchest")
    for bad, match in ((dict(num_images=0), "num_images"), (dict(size=16), "size"), (dict(difficulty=2), "difficulty")):
        with pytest.raises(ValueError, match=match):
            write_phantom_layout(tmp_path, **{"num_images": 10, **bad}, layout="covidx")
    # rewriting the same corpus is fine; another corpus's images are refused, never deleted
    write_phantom_layout(tmp_path / "c", 30, layout="covidx", size=32)
    write_phantom_layout(tmp_path / "c", 30, layout="covidx", size=32)
    with pytest.raises(ValueError, match="not part of this corpus"):
        write_phantom_layout(tmp_path / "c", 30, layout="covidx", size=32, seed=1)
    assert (tmp_path / "c" / PHANTOM_RECORD).is_file()


def test_gzip_files_are_plain_gzip(mimic):
    for name in ("metadata", "split", "chexpert", "negbio"):
        raw = (mimic.output_dir / f"mimic-cxr-2.0.0-{name}.csv.gz").read_bytes()
        assert raw[4:8] == b"\0\0\0\0"  # no modification time: the same arguments give the same bytes
        assert _read_csv(io.BytesIO(gzip.decompress(raw))).shape[0] > 0
