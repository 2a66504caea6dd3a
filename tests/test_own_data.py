"""A user's own radiographs: a folder + a table (`csv`) and an unlabelled folder (`folder`), read with every check
before training, and run end to end through `accelerate launch` as a user runs them."""

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from own_data_helpers import OWN_LABELS, own_options, write_own_corpus
from test_recipes import ROOT, run

from cxr_vitmae import CXRViTMAEConfig, CXRViTMAEForPreTraining, load_radiograph
from cxr_vitmae.cli import main as cli_main
from cxr_vitmae.data import CorpusError, label_names, load_cxr_dataset, split_source
from cxr_vitmae.data.transforms import evaluation_transform
from cxr_vitmae.training.data import TransformedCorpus

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> Path:
    return write_own_corpus(tmp_path_factory.mktemp("own"))


@pytest.fixture(scope="module")
def own_split(tmp_path_factory) -> Path:
    return write_own_corpus(tmp_path_factory.mktemp("own_split"), split_column=True)


@pytest.fixture(scope="module")
def own_classes(tmp_path_factory) -> Path:
    return write_own_corpus(tmp_path_factory.mktemp("own_classes"), class_column=True)


def table_rows(root: Path) -> dict[str, dict[str, str]]:
    with open(root / "labels.csv", newline="") as handle:
        return {row["Image Path"]: row for row in csv.DictReader(handle)}


def test_csv_reads_every_row_with_the_policies_and_patient_disjoint_splits(own, tmp_path):
    splits = load_cxr_dataset("csv", own, cache_dir=tmp_path, **own_options())
    rows = table_rows(own)
    assert set(splits) == {"train", "validation", "test"}
    assert sum(len(split) for split in splits.values()) == len(rows)
    assert label_names("csv", **own_options()) == list(OWN_LABELS)
    seen = set()
    for split in splits.values():
        for example in split.select_columns(["image_id", "patient_id", "labels"]):
            row = rows[example["image_id"]]
            seen.add(example["image_id"])
            assert example["patient_id"] == row["MRN"]  # strings, as given
            for column, value in zip(OWN_LABELS, example["labels"], strict=True):
                # The default policies: uncertain (-1) -> NaN, blank -> 0.
                expected = {"": 0.0, "-1": float("nan")}.get(row[column], float(row[column] or 0))
                assert value == expected or (np.isnan(value) and np.isnan(expected)), (column, row)
    assert seen == set(rows)
    patients = {name: set(split["patient_id"]) for name, split in splits.items()}
    assert not patients["train"] & patients["validation"] and not patients["train"] & patients["test"]
    assert not patients["validation"] & patients["test"]
    # The carve is by patient, as NIH's: a quarter of the patients each for validation and test.
    everyone = set().union(*patients.values())
    assert len(patients["test"]) == round(0.25 * len(everyone))
    assert "labels.csv" in split_source("csv", "test", own, **own_options())
    assert "MRN" in split_source("csv", "test", own, **own_options())


def test_every_format_decodes_as_load_radiograph_reads_it(own, tmp_path):
    """8/16-bit PNG, JPEG and DICOM through the training data path (datasets cannot decode DICOM itself)."""
    train = load_cxr_dataset("csv", own, cache_dir=tmp_path, **own_options())["train"]
    transform = evaluation_transform(32, resize=32)
    corpus = TransformedCorpus(train, transform, seed=0)
    suffixes, image_ids = set(), train["image_id"]
    for index in range(8):
        path = own / image_ids[index]
        suffixes.add(path.suffix)
        expected = transform(load_radiograph(path))
        torch.testing.assert_close(corpus[index]["pixel_values"], expected, atol=1e-5, rtol=0)
    assert {".png", ".jpg", ".dcm"} <= suffixes


@pytest.mark.slow
def test_pil_reads_dicom_once_opted_in(own):
    """`dataset[i]["image"]` on DICOM rows works in a process that opted in (a fresh one: registration is global)."""
    code = (
        "import numpy as np, sys; from PIL import Image; from cxr_vitmae import load_radiograph\n"
        "from cxr_vitmae.data.dicom_images import register_dicom_with_pil\n"
        "register_dicom_with_pil(); path = sys.argv[1]\n"
        "assert np.array_equal(np.asarray(Image.open(path)), load_radiograph(path))\n"
        "assert np.array_equal(np.asarray(Image.open(open(path, 'rb'))), load_radiograph(path))"
    )
    subprocess.run([sys.executable, "-c", code, str(own / "scans" / "scan_0003.dcm")], check=True, timeout=120)


def test_folder_patients_from_the_folder_holding_each_image(own, tmp_path):
    """A hospital tree `<site>/<year>/<MRN>/<file>`: the MRN folder is the patient, and an exclusion list of MRNs keeps
    those patients out."""
    archive = tmp_path / "export"
    for index, image in enumerate(sorted((own / "scans").iterdir())[:12]):
        folder = archive / f"site{index % 2}" / "2019" / f"MRN{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder / image.name)
    (tmp_path / "exclude.txt").write_text("MRN1\n")
    options = {"patients_from": "parent", "exclude": str(tmp_path / "exclude.txt")}
    train = load_cxr_dataset("folder", archive, cache_dir=tmp_path / "cache", **options)["train"]
    assert set(train["patient_id"]) == {"MRN0", "MRN2"} and len(train) == 8


def test_split_column_and_class_column(own_split, own_classes, tmp_path):
    splits = load_cxr_dataset("csv", own_split, cache_dir=tmp_path, **own_options(split_column=True))
    folds = {row["Image Path"]: row["fold"] for row in table_rows(own_split).values()}
    for name, split in splits.items():
        assert {folds[image_id] for image_id in split["image_id"]} == {"val" if name == "validation" else name}
    assert "column 'fold' says test" in split_source("csv", "test", own_split, **own_options(split_column=True))

    options = own_options(class_column=True)
    classes = load_cxr_dataset("csv", own_classes, cache_dir=tmp_path, **options)
    names = label_names("csv", own_classes, **options)
    assert names == sorted(names) and set(names) <= {"cardiomegaly", "effusion", "other"}
    assert classes["train"].features["label"].names == names
    rows = table_rows(own_classes)
    for example in classes["test"].select_columns(["image_id", "label", "labels"]):
        assert names[example["label"]] == rows[example["image_id"]]["finding"]
        assert example["labels"][example["label"]] == 1.0 and sum(example["labels"]) == 1.0


def _rewrite(table: Path, line: int, column: str, value: str) -> None:
    """Set `column` of the row on file line `line` (the header is line 1) to `value`."""
    with open(table, newline="") as handle:
        rows = list(csv.reader(handle))
    rows[line - 1][rows[0].index(column)] = value
    with open(table, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def _break(root: Path, case: str) -> tuple[dict, str]:
    """Damage a copy of the corpus as `case` says; the options to read it and the message expected."""
    table = root / "labels.csv"
    options = own_options(split_column=case == "patient in two splits")
    if case == "missing column":
        options["patient_column"] = "Patient ID"
        return options, r"labels\.csv: no column 'Patient ID' \(option patient_column\)"
    if case == "unknown label value":
        _rewrite(table, 5, "pleural effusion", "yes")
        return options, r"labels\.csv, line 5, column 'pleural effusion': label value 'yes'"
    if case == "path outside data_dir":
        _rewrite(table, 4, "Image Path", "../elsewhere/scan.png")
        return options, r"labels\.csv, line 4, column 'Image Path': '\.\./elsewhere/scan\.png' is outside data_dir"
    if case == "duplicate image":
        _rewrite(table, 9, "Image Path", "scans/./scan_0001.png")
        return options, r"labels\.csv, line 9, column 'Image Path': .* already listed on line 3 \(duplicate image\)"
    if case == "patient in two splits":
        rows = list(table_rows(root).values())
        first = rows[0]
        other = next(i for i, row in enumerate(rows) if row["fold"] != first["fold"])
        _rewrite(table, other + 2, "MRN", first["MRN"])
        return options, rf"labels\.csv, line {other + 2}, column 'fold': patient '{first['MRN']}' is in .* line 2"
    if case == "unreadable image":
        image = root / "scans" / "scan_0006.jpg"
        image.write_bytes(image.read_bytes()[:-400])
        return options, r"labels\.csv, line 8, column 'Image Path': image 'scans/scan_0006\.jpg' is truncated"
    if case == "truncated DICOM":
        image = root / "scans" / "scan_0007.dcm"
        image.write_bytes(image.read_bytes()[:-500])
        return options, r"labels\.csv, line 9, column 'Image Path': image 'scans/scan_0007\.dcm' is truncated DICOM"
    if case == "blank patient":
        _rewrite(table, 6, "MRN", "")
        return options, r"labels\.csv, line 6, column 'MRN': blank; expected a patient id"
    if case == "label columns as one string":
        options["label_columns"] = "cardiomegaly,pleural effusion"
        return options, r"label_columns='cardiomegaly,pleural effusion' is one string; give a list"
    raise AssertionError(case)


CASES = (
    "missing column",
    "unknown label value",
    "path outside data_dir",
    "duplicate image",
    "patient in two splits",
    "unreadable image",
    "truncated DICOM",
    "blank patient",
    "label columns as one string",
)


@pytest.mark.parametrize("case", CASES)
def test_every_bad_table_is_one_line_naming_file_row_and_column(own, own_split, tmp_path, capsys, case):
    root = tmp_path / "corpus"
    shutil.copytree(own_split if case == "patient in two splits" else own, root, ignore=shutil.ignore_patterns("cache"))
    options, message = _break(root, case)
    with pytest.raises(CorpusError, match=message):
        load_cxr_dataset("csv", root, cache_dir=tmp_path / "cache", **options)
    # The CLI: one line on stderr, non-zero exit, nothing prepared.
    arguments = [f"--option={key}={json.dumps(value)}" for key, value in options.items()]
    code = cli_main(["prepare", "csv", "--data-dir", str(root), "--output", str(tmp_path / "prep"), *arguments])
    error = capsys.readouterr().err.strip()
    assert code == 1 and len(error.splitlines()) == 1 and error.startswith("cxr-vitmae prepare: error: ")
    assert not (tmp_path / "prep").exists()


@pytest.fixture(scope="module")
def mae_dir(tmp_path_factory) -> Path:
    """A tiny pre-training directory (a stand-in for the paper's MAE) to continue from."""
    config = CXRViTMAEConfig.from_preset("vit-tiny", image_size=32, patch_size=8, num_hidden_layers=2)
    directory = tmp_path_factory.mktemp("mae")
    CXRViTMAEForPreTraining(config).save_pretrained(directory)
    return directory


def launch(recipe: str, *flags: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [str(BIN / "accelerate"), "launch", f"recipes/{recipe}.py", "--image_size", "32",
               "--seed", "3", "--per_device_train_batch_size", "8", "--logging_steps", "1", *flags]  # fmt: skip
    if check:
        return run(command)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def finetune_flags(data_dir: Path, options: dict, output: Path, model: Path) -> list[str]:
    return ["--dataset", "csv", "--data_dir", str(data_dir), "--dataset_options", json.dumps(options),
            "--output_dir", str(output), "--model", str(model), "--num_train_epochs", "2",
            "--per_device_eval_batch_size", "16", "--n_bootstrap", "20"]  # fmt: skip


@pytest.mark.slow
def test_pretraining_on_a_folder_continues_from_an_mae_directory(own, mae_dir, tmp_path):
    archive = tmp_path / "archive"
    for index, image in enumerate(sorted((own / "scans").iterdir())[:48]):
        (archive / f"patient{index % 6}").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, archive / f"patient{index % 6}" / image.name)
    (archive / "held_out.txt").write_text("# evaluation patients\npatient5\n")
    output = tmp_path / "mae"
    result = launch(
        "pretrain", "--dataset", "folder", "--data_dir", str(archive), "--output_dir", str(output), "--model",
        str(mae_dir), "--num_train_epochs", "1",
        "--dataset_options", json.dumps({"patients_from": "folder", "exclude": "held_out.txt"}),
    )  # fmt: skip
    assert "40 training images" in result.stdout  # 48 minus patient5's 8
    record = json.loads((output / "training_args.json").read_text())
    assert record["dataset"] == "folder" and record["n_train_images"] == 40
    start = CXRViTMAEForPreTraining.from_pretrained(mae_dir).state_dict()
    end = CXRViTMAEForPreTraining.from_pretrained(output).state_dict()
    assert set(start) == set(end)
    assert any(not torch.equal(start[name], end[name]) for name in start)  # it trained from there


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["carved", "split column", "class column"])
def test_finetune_on_own_table_end_to_end(own, own_split, own_classes, mae_dir, tmp_path, layout):
    data_dir, options = {
        "carved": (own, own_options()),
        "split column": (own_split, own_options(split_column=True)),
        "class column": (own_classes, own_options(class_column=True)),
    }[layout]
    output = tmp_path / "run"
    launch("finetune", *finetune_flags(data_dir, options, output, mae_dir))
    metrics = json.loads((output / "metrics.json").read_text())
    names = label_names("csv", data_dir, **options)
    assert metrics["dataset"] == "csv" and list(metrics["per_class"]) == names
    assert "labels.csv" in metrics["split_source"]
    config = json.loads((output / "config.json").read_text())
    assert list(config["id2label"].values()) == names
    single = layout == "class column"
    assert config["problem_type"] == ("single_label_classification" if single else "multi_label_classification")
    assert (metrics["accuracy"] is not None) == single
    # The card names the user's table, never a public corpus.
    card = tmp_path / "card"
    assert cli_main(["push", str(output), "--repo-id", "me/own-model", "--dry-run", str(card)]) == 0
    card_data = ModelCard.load(card / "README.md").data
    assert "labels.csv" in (card / "README.md").read_text()
    assert not set(card_data.datasets or ()) & {"nih-chestxray14", "chexpert", "mimic-cxr", "covidx"}


@pytest.mark.slow
def test_bad_table_under_accelerate_launch_is_one_line_before_training(own, mae_dir, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(own, root)
    options, message = _break(root, "unknown label value")
    output = tmp_path / "run"
    # The recipe prints the one line and no traceback of its own; the launcher adds its report that a process
    # failed unless told to be quiet (`accelerate launch -q`, "errors without the launcher traceback").
    result = launch("finetune", *finetune_flags(root, options, output, mae_dir), check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr[-3000:]
    assert 'File "' + str(ROOT / "recipes") not in result.stderr and "cxr_vitmae" not in result.stderr
    assert not (output / "checkpoints").exists() and not (output / "model.safetensors").exists()
