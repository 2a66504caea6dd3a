"""`--dataset hf`: a Hugging Face dataset as a labelled corpus, read from a local `save_to_disk` folder, a Parquet
folder, an imagefolder, and a Hub dataset repository (the local server of tests/fake_hub.py: no mocks), first online
and then offline from the cache; bad rows refused by one CorpusError; a fine-tune through the real recipe."""

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import huggingface_hub.constants
import numpy as np
import pytest
from fake_hub import FakeHub
from huggingface_hub import HfApi
from PIL import Image
from test_image_processor import write_dicom
from test_recipes import TINY

from cxr_vitmae import CXRViTMAEConfig, ViTMAEForChestXray, load_radiograph
from cxr_vitmae.cli import main as cli_main
from cxr_vitmae.data import CorpusError, label_names, load_cxr_dataset, split_source
from cxr_vitmae.data.phantoms import generate_phantoms

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "hf_fake_token"
REPO = "cxr-lab/cxr-small"
# The user's column -> the NIH finding it holds; each column has its own cell type (and blanks or uncertain cells).
COLUMNS = {"atelectasis": "Atelectasis", "fluid": "Effusion", "infiltrate": "Infiltration"}
FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "atelectasis": datasets.Value("int64"),
        "fluid": datasets.Value("float32"),
        "infiltrate": datasets.Value("bool"),
        "patient": datasets.Value("string"),
    }
)
OPTIONS = {"label_columns": list(COLUMNS), "patient_column": "patient"}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, list[dict]]:
    """Rows per split as a user would put them in a dataset (NIH's train and validation phantoms -> train, its test
    -> test): embedded image bytes (the first one a 16-bit PNG), int / float / bool label cells with None (blank)
    and -1.0 (uncertain) cells, MRNs as patient ids. `file` (not a column) is where each image's bytes came from."""
    root = tmp_path_factory.mktemp("hf-phantoms")
    phantoms = generate_phantoms(root / "phantoms", 60, size=48, seed=1, difficulty="easy").output_dir
    nih = load_cxr_dataset("nih-chestxray14", phantoms, cache_dir=root / "cache")
    names = label_names("nih-chestxray14")
    rows = {"train": [], "test": []}
    count = 0
    for split, dataset in nih.items():
        for example in dataset.cast_column("image", datasets.Image(decode=False)):
            file = Path(example["image"]["path"])
            if count == 0:  # 16 bits: must reach load_radiograph as it is, not through PIL's 8-bit conversion
                pixels = np.asarray(Image.open(file)).astype(np.uint16) * 257
                file = root / "png16" / file.name
                file.parent.mkdir()
                Image.fromarray(pixels).save(file)
            findings = dict(zip(names, example["labels"], strict=True))
            rows["test" if split == "test" else "train"].append(
                {
                    "image": {"bytes": file.read_bytes(), "path": file.name},
                    "atelectasis": None if count % 5 == 1 else int(findings["Atelectasis"]),
                    "fluid": -1.0 if count % 7 == 2 else float(findings["Effusion"]),
                    "infiltrate": None if count % 6 == 3 else bool(findings["Infiltration"]),
                    "patient": f"MRN-{int(example['patient_id']):06d}",
                    "file": file,
                }
            )
            count += 1
    return rows


def as_dataset(rows: list[dict], features: datasets.Features = FEATURES) -> datasets.Dataset:
    return datasets.Dataset.from_list([{key: row[key] for key in features} for row in rows], features=features)


def expected_labels(row: dict) -> list[float]:
    """The default policies: a blank cell is 0 (`blank="zeros"`), an uncertain one NaN (`uncertainty="ignore"`)."""
    cells = [row[column] for column in COLUMNS]
    return [0.0 if cell is None else math.nan if cell == -1 else float(cell) for cell in cells]


def same_labels(found: list[float], expected: list[float]) -> bool:
    return np.array_equal(np.asarray(found, dtype=np.float32), np.asarray(expected, dtype=np.float32), equal_nan=True)


def assert_read_as_written(splits: datasets.DatasetDict, written: dict[str, list[dict]], scratch: Path) -> None:
    """Every row is read back: image id (its file name), labels, patient, the image byte for byte and, through
    `load_radiograph`, pixel for pixel (16 bits and DICOM included); the dataset's splits kept, validation carved
    from train by patient where it has none."""
    rows = {row["image"]["path"]: (split, row) for split, split_rows in written.items() for row in split_rows}
    found = {split: list(dataset["image_id"]) for split, dataset in splits.items()}
    assert sorted(id_ for ids in found.values() for id_ in ids) == sorted(rows)
    assert sorted(found["test"]) == sorted(row["image"]["path"] for row in written["test"])
    if "validation" in written:
        assert sorted(found["validation"]) == sorted(row["image"]["path"] for row in written["validation"])
    else:
        assert found["validation"] and {rows[id_][0] for id_ in found["validation"]} == {"train"}
    patients = {split: set(dataset["patient_id"]) for split, dataset in splits.items()}
    assert not (patients["train"] & patients["validation"]) and not (patients["train"] & patients["test"])

    for split, dataset in splits.items():
        assert isinstance(dataset.features["image"], datasets.Image)
        for example in dataset.cast_column("image", datasets.Image(decode=False)):
            row = rows[example["image_id"]][1]
            assert same_labels(example["labels"], expected_labels(row)), (split, example["image_id"])
            assert (example["patient_id"], example["view"]) == (row["patient"], "")
            assert example["image"]["bytes"] == row["image"]["bytes"]
            copy = scratch / example["image_id"]
            copy.write_bytes(example["image"]["bytes"])
            np.testing.assert_array_equal(load_radiograph(copy), load_radiograph(row["file"]))
    # The training loaders decode with datasets' own (PIL) decoding: the 16-bit PNG's 16 bits survive it.
    sixteen = written["train"][0]
    split = next(split for split, ids in found.items() if sixteen["image"]["path"] in ids)
    decoded = splits[split][found[split].index(sixteen["image"]["path"])]["image"]
    assert decoded.mode == "I;16"
    np.testing.assert_array_equal(load_radiograph(decoded), load_radiograph(sixteen["file"]))


def test_save_to_disk_folder(written, tmp_path):
    """A `save_to_disk` DatasetDict whose validation split is called `dev`, with a DICOM file among its images; a
    rewritten folder is read again, not taken from the cache."""
    dicom = write_dicom(
        tmp_path / "scan.dcm", np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) % 4096, "MONOCHROME2"
    )
    extra = {**written["train"][1], "image": {"bytes": dicom.read_bytes(), "path": "scan.dcm"}, "file": dicom}
    extra["patient"] = "MRN-999999"
    last_two = set(list(dict.fromkeys(row["patient"] for row in written["train"]))[-2:])
    source = {
        "train": [row for row in written["train"] if row["patient"] not in last_two] + [extra],
        "validation": [row for row in written["train"] if row["patient"] in last_two],
        "test": written["test"],
    }
    folder = tmp_path / "cxr small"
    names = {"train": "train", "validation": "dev", "test": "test"}
    datasets.DatasetDict({names[split]: as_dataset(rows) for split, rows in source.items()}).save_to_disk(folder)
    (tmp_path / "scratch").mkdir()

    splits = load_cxr_dataset("hf", None, path=str(folder), **OPTIONS)
    assert list(splits) == ["train", "validation", "test"]
    assert_read_as_written(splits, source, tmp_path / "scratch")
    assert label_names("hf", path=str(folder), **OPTIONS) == list(COLUMNS)
    described = split_source("hf", "validation", path=str(folder), **OPTIONS)
    assert described == "the validation split of the local dataset folder cxr small"
    assert str(tmp_path) not in split_source("hf", "train", path=str(folder), **OPTIONS)

    # Rewritten in place (another fingerprint): read again, not taken from the cache.
    source["test"] = [{**row, "atelectasis": 1} for row in source["test"]]
    shutil.rmtree(folder)
    datasets.DatasetDict({names[split]: as_dataset(rows) for split, rows in source.items()}).save_to_disk(folder)
    again = load_cxr_dataset("hf", None, path=str(folder), **OPTIONS)
    assert [labels[0] for labels in again["test"]["labels"]] == [1.0] * len(source["test"])


def write_parquet_folder(folder: Path, written: dict[str, list[dict]]) -> Path:
    """A dataset repository's layout: `data/<split>-00000-of-00001.parquet`, the images embedded."""
    for split, rows in written.items():
        as_dataset(rows).to_parquet(folder / "data" / f"{split}-00000-of-00001.parquet")
    return folder


def test_parquet_folder(written, tmp_path):
    """Parquet files, read with `datasets.load_dataset(path)`: train and test, validation carved by patient."""
    folder = write_parquet_folder(tmp_path / "parquet", written)
    (tmp_path / "scratch").mkdir()
    splits = load_cxr_dataset("hf", None, path=str(folder), validation_fraction=0.3, **OPTIONS)
    assert list(splits) == ["train", "validation", "test"]
    assert_read_as_written(splits, written, tmp_path / "scratch")
    carved = split_source("hf", "validation", path=str(folder), validation_fraction=0.3, **OPTIONS)
    assert carved.startswith("30% of the local dataset folder parquet's train patients, carved (seed 0; patients")


def test_imagefolder_with_metadata(written, tmp_path):
    """Images as files and a metadata.csv (one split): images stored by path, ids their paths in the folder, a
    ClassLabel-free class column whose classes are its sorted values, test carved too (`test_fraction`)."""
    folder = tmp_path / "imagefolder"
    (folder / "images").mkdir(parents=True)
    rows, lines = {}, ["file_name,finding,patient"]
    for row in written["train"] + written["test"]:
        name = f"images/{row['image']['path']}"
        shutil.copy(row["file"], folder / name)
        rows[name] = {
            **row,
            "finding": "effusion" if row["fluid"] == 1 else "atelectasis" if row["atelectasis"] else "other",
        }
        lines.append(f"{name},{rows[name]['finding']},{row['patient']}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    options = {"class_column": "finding", "patient_column": "patient", "test_fraction": 0.25}

    splits = load_cxr_dataset("hf", None, path=str(folder), **options)
    assert list(splits) == ["train", "validation", "test"]
    classes = label_names("hf", path=str(folder), **options)
    assert classes == ["atelectasis", "effusion", "other"]
    assert sorted(id_ for dataset in splits.values() for id_ in dataset["image_id"]) == sorted(rows)
    for dataset in splits.values():
        for example in dataset.cast_column("image", datasets.Image(decode=False)):
            assert example["image"] == {"bytes": None, "path": str(folder / example["image_id"])}
            row = rows[example["image_id"]]
            assert (example["label"], example["patient_id"]) == (classes.index(row["finding"]), row["patient"])
            np.testing.assert_array_equal(load_radiograph(example["image"]["path"]), load_radiograph(row["file"]))


def test_class_label_column_gives_the_class_order(written, tmp_path):
    """A single-label dataset whose class column is a ClassLabel: its names, in its order, are the classes."""
    names = ["normal", "effusion", "atelectasis"]
    features = datasets.Features({**FEATURES, "finding": datasets.ClassLabel(names=names)})
    rows = [{**row, "finding": i % 3} for i, row in enumerate(written["train"] + written["test"])]
    folder = tmp_path / "single"
    datasets.DatasetDict({"train": as_dataset(rows, features)}).save_to_disk(folder)
    options = {"class_column": "finding", "patient_column": "patient"}
    assert label_names("hf", path=str(folder), **options) == names
    splits = load_cxr_dataset("hf", None, path=str(folder), **options)
    assert splits["train"].features["label"].names == names
    by_name = {row["image"]["path"]: row["finding"] for row in rows}
    for dataset in splits.values():
        assert [by_name[id_] for id_ in dataset["image_id"]] == dataset["label"]


def corrupt(written: dict[str, list[dict]], split: str, row: int, **cells) -> dict[str, list[dict]]:
    """The first 8 rows of each split, one row's `cells` changed (a callable: from the row)."""
    rows = {name: list(split_rows[:8]) for name, split_rows in written.items()}
    changed = {key: value(rows[split][row]) if callable(value) else value for key, value in cells.items()}
    rows[split][row] = {**rows[split][row], **changed}
    return rows


def truncated(row: dict) -> dict:
    return {**row["image"], "bytes": row["image"]["bytes"][:-30]}


BAD_INPUT = {
    "missing column": (
        lambda rows: rows,
        {"label_columns": ["atelectasis", "pleura"]},
        "split 'train': no column 'pleura' (option label_columns['pleura'])",
    ),
    "unknown label value": (
        lambda rows: corrupt(rows, "test", 3, fluid=2.0),
        {},
        "split 'test', row 3, column 'fluid': label value 2.0; expected 1, 0, -1 (uncertain) or blank",
    ),
    "unreadable image": (
        lambda rows: corrupt(rows, "train", 5, image={"bytes": b"\x89PNG not really", "path": "bad.png"}),
        {},
        "split 'train', row 5, column 'image': image 'bad.png' is not a readable PNG, JPEG or DICOM file",
    ),
    "truncated image": (
        lambda rows: corrupt(rows, "train", 2, image=truncated),
        {},
        ("split 'train', row 2, column 'image': image '", ".png' is truncated: no PNG end marker"),
    ),
    "blank patient": (
        lambda rows: corrupt(rows, "test", 1, patient=None),
        {},
        "split 'test', row 1, column 'patient': blank; expected a patient id",
    ),
    "patient in two splits": (
        lambda rows: corrupt(rows, "test", 0, patient=rows["train"][0]["patient"]),
        {},
        "split 'test', row 0: patient",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_rows_are_one_error_naming_split_row_and_column(written, tmp_path, case):
    change, options, message = BAD_INPUT[case]
    folder = tmp_path / "bad"
    datasets.DatasetDict({split: as_dataset(rows) for split, rows in change(written).items()}).save_to_disk(folder)
    with pytest.raises(CorpusError) as error:
        load_cxr_dataset("hf", None, cache_dir=tmp_path / "cache", path=str(folder), **{**OPTIONS, **options})
    for part in (message,) if isinstance(message, str) else message:
        assert part in str(error.value)
    assert str(error.value).startswith(f"{folder}, split ") and "\n" not in str(error.value)
    assert not list((tmp_path / "cache").rglob("*.arrow")), "nothing may be built from a bad dataset"


def test_bad_options_and_split_names(written, tmp_path):
    folder = tmp_path / "splits"
    two = {"train": as_dataset(written["train"][:6]), "val": as_dataset(written["train"][6:8])}
    datasets.DatasetDict({**two, "validation": as_dataset(written["test"][:2])}).save_to_disk(folder)
    with pytest.raises(CorpusError, match=r"splits \['train', 'val', 'validation'\] give validation more than once"):
        load_cxr_dataset("hf", None, path=str(folder), **OPTIONS)
    shutil.rmtree(folder)
    datasets.DatasetDict({**two, "extra": as_dataset(written["test"][:2])}).save_to_disk(folder)
    with pytest.raises(CorpusError, match="split 'extra'; expected train, validation"):
        load_cxr_dataset("hf", None, path=str(folder), **OPTIONS)
    with pytest.raises(CorpusError, match="option revision is for a Hub dataset"):
        load_cxr_dataset("hf", None, path=str(folder), revision="main", **OPTIONS)
    with pytest.raises(CorpusError, match="hf needs the option path"):
        load_cxr_dataset("hf", None, **OPTIONS)
    with pytest.raises(CorpusError, match="no such folder, and not a Hub dataset repository id"):
        load_cxr_dataset("hf", None, path=str(tmp_path / "nowhere"), **OPTIONS)
    with pytest.raises(CorpusError, match="data_dir is for a prepared copy"):
        load_cxr_dataset("hf", tmp_path, path=str(folder), **OPTIONS)


# ---- a Hub dataset repository, on the fake Hub ----


@pytest.fixture(scope="module")
def hub():
    with FakeHub(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def hub_dataset(hub, written, tmp_path_factory) -> Path:
    """REPO on the fake Hub: the Parquet layout `DatasetDict.push_to_hub` writes (train and test); the local copy
    uploaded (the conftest's offline mode is lifted for the upload only)."""
    folder = write_parquet_folder(tmp_path_factory.mktemp("hub-dataset"), written)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.create_repo(REPO, repo_type="dataset")
        api.upload_folder(repo_id=REPO, repo_type="dataset", folder_path=folder)
    return folder


# What a user's script does: the corpus read through `load_cxr_dataset` (saved for the test to compare) and what
# its splits are read from.
READER = """
import json, sys
from cxr_vitmae.data import load_cxr_dataset, split_source
options = json.loads(sys.argv[1])
load_cxr_dataset("hf", None, **options).save_to_disk(sys.argv[2])
print(json.dumps({name: split_source("hf", name, **options) for name in ("train", "validation", "test")}))
"""


def read_in_fresh_process(options: dict, hub: FakeHub, hf_home: Path, output: Path, offline: bool = False):
    """READER in a fresh process configured as a user's shell would be (HF_ENDPOINT, HF_HUB_OFFLINE, HF_HOME, no
    token): the corpus's `summary` and its split sources."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HOME": str(hf_home)}
    env.pop("HF_TOKEN", None)
    command = [sys.executable, "-c", READER, json.dumps(options), str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return summary(datasets.load_from_disk(str(output))), json.loads(result.stdout.strip().splitlines()[-1])


def summary(splits: datasets.DatasetDict) -> dict:
    """Per split: each example's image id, labels (NaN as None, to compare), patient and image bytes' SHA-256."""
    return {
        name: [
            (e["image_id"], [None if math.isnan(v) else v for v in e["labels"]], e["patient_id"],
             hashlib.sha256(e["image"]["bytes"]).hexdigest())
            for e in split.cast_column("image", datasets.Image(decode=False))
        ]
        for name, split in splits.items()
    }  # fmt: skip


@pytest.mark.slow
def test_hub_dataset_online_then_offline_from_the_cache(hub, hub_dataset, written, tmp_path):
    options = {"path": REPO, "validation_fraction": 0.3, **OPTIONS}
    local = summary(load_cxr_dataset("hf", None, **{**options, "path": str(hub_dataset)}))
    hf_home = tmp_path / "hf_home"

    online, sources = read_in_fresh_process(options, hub, hf_home, tmp_path / "online")
    assert online == local
    commit = hub.datasets[REPO].commits[-1]
    assert sources["test"] == f"the test split of the Hub dataset {REPO} at commit {commit}"
    assert sources["validation"].startswith(f"30% of the Hub dataset {REPO} at commit {commit}'s train patients")
    downloaded = {request.path for request in hub.calls(f"/datasets/{REPO}/resolve/") if request.method == "GET"}
    assert downloaded == {f"/datasets/{REPO}/resolve/{commit}/{name}" for name in hub.datasets[REPO].files}

    requests_so_far = len(hub.requests)
    assert read_in_fresh_process(options, hub, hf_home, tmp_path / "offline", offline=True) == (online, sources)
    assert len(hub.requests) == requests_so_far, "offline, nothing may reach the Hub"

    # A new commit on the Hub is a changed source: read online again, it is rebuilt, not taken from the cache.
    changed = tmp_path / "changed"
    (changed / "data").mkdir(parents=True)
    shutil.copy(hub_dataset / "data" / "train-00000-of-00001.parquet", changed / "data")
    as_dataset([{**row, "atelectasis": 1} for row in written["test"]]).to_parquet(
        changed / "data" / "test-00000-of-00001.parquet"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        HfApi(endpoint=hub.url, token=TOKEN).upload_folder(repo_id=REPO, repo_type="dataset", folder_path=changed)
    again, sources = read_in_fresh_process(options, hub, hf_home, tmp_path / "again")
    assert [labels[0] for _, labels, _, _ in again["test"]] == [1.0] * len(written["test"])
    assert sources["test"].endswith(f"at commit {hub.datasets[REPO].commits[-1]}")


def test_fake_hub_serves_dataset_repositories(hub, hub_dataset, monkeypatch):
    """The dataset endpoints through huggingface_hub's own calls: info, tree, paths-info (anonymous), resolve."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    anonymous = HfApi(endpoint=hub.url, token=False)
    info = anonymous.dataset_info(REPO)
    assert info.sha == hub.datasets[REPO].commits[-1] and info.id == REPO
    assert {sibling.rfilename for sibling in info.siblings} == set(hub.datasets[REPO].files)
    listing = {entry.path for entry in anonymous.list_repo_tree(REPO, repo_type="dataset", recursive=True)}
    assert listing == {"data", *hub.datasets[REPO].files}
    wanted = ["data/train-00000-of-00001.parquet", "data", "missing.parquet"]
    found = anonymous.get_paths_info(REPO, wanted, repo_type="dataset")
    assert [(entry.path, type(entry).__name__) for entry in found] == [
        ("data/train-00000-of-00001.parquet", "RepoFile"),
        ("data", "RepoFolder"),
    ]
    assert found[0].size == len(hub.datasets[REPO].files["data/train-00000-of-00001.parquet"])
    assert not hub.repos, "a dataset repository is not a model repository"


@pytest.mark.slow
def test_finetune_recipe_on_a_hub_dataset(hub, hub_dataset, written, tmp_path):
    """`accelerate launch recipes/finetune.py --dataset hf` with no --data_dir, the dataset read from the Hub."""
    options = {"path": REPO, "validation_fraction": 0.3, **OPTIONS}
    output_dir = tmp_path / "run"
    command = [
        str(BIN / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "recipes/finetune.py", "--dataset", "hf", "--dataset_options", json.dumps(options),
        "--output_dir", str(output_dir), "--model", "vit-tiny", "--model_overrides", TINY, "--image_size", "32",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--num_train_epochs", "2",
        "--n_bootstrap", "20", "--logging_steps", "1", "--base_learning_rate", "1e-3", "--seed", "3",
    ]  # fmt: skip
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]

    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert (metrics["dataset"], metrics["split"], metrics["n_images"]) == ("hf", "test", len(written["test"]))
    assert (
        metrics["split_source"]
        == f"the test split of the Hub dataset {REPO} at commit {hub.datasets[REPO].commits[-1]}"
    )
    assert set(metrics["per_class"]) <= set(COLUMNS) and metrics["selected_by"] == "validation mean_auroc"
    assert metrics["synthetic_corpus"] is None
    assert str(tmp_path) not in json.dumps(metrics)


def test_cli_prepares_and_evaluates_a_dataset_without_data_dir(written, tmp_path, capsys):
    """`prepare hf` / `evaluate --dataset hf` take the dataset from the option `path`, as the recipes do."""
    folder = write_parquet_folder(tmp_path / "cxr parquet", written)
    options = {"path": str(folder), "validation_fraction": 0.3, **OPTIONS}
    flags = [f"--option={key}={json.dumps(value)}" for key, value in options.items()]
    prepared = tmp_path / "prepared"
    assert cli_main(["prepare", "hf", "--output", str(prepared), "--size", "32", *flags]) == 0, capsys.readouterr().err
    source = load_cxr_dataset("hf", None, **options)
    copy = load_cxr_dataset("hf", prepared, **options)
    assert {split: copy[split]["image_id"] for split in copy} == {split: source[split]["image_id"] for split in source}
    assert label_names("hf", prepared, **options) == list(COLUMNS)

    model = tmp_path / "model"
    labels = {"id2label": dict(enumerate(COLUMNS)), "label2id": {name: i for i, name in enumerate(COLUMNS)}}
    config = CXRViTMAEConfig.from_preset("vit-tiny", image_size=32, patch_size=8, num_hidden_layers=1, **labels)
    ViTMAEForChestXray(config).save_pretrained(model)
    output = tmp_path / "metrics.json"
    code = cli_main(["evaluate", str(model), "--dataset", "hf", "--output", str(output), "--n-bootstrap", "5", *flags])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads(output.read_text())
    assert metrics["dataset"] == "hf" and metrics["n_images"] == len(source["test"])
    assert list(metrics["per_class"]) == list(COLUMNS)
