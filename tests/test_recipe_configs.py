"""Every recipe config of `recipes/configs/`, end to end, as a user runs it: phantoms in each corpus's distributed
layout -> `accelerate launch` (the config, shrunk by flags only: a tiny ViT, 32 px, two steps) -> weights or
metrics.json and figures -> `cxr-vitmae push --dry-run` model card naming the dataset and the split reported on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from model_helpers import assert_readable_png

from cxr_vitmae.cli import main as cli
from cxr_vitmae.data import load_cxr_dataset, split_source, synthetic_corpus
from cxr_vitmae.data.phantoms import generate_phantoms, write_phantom_layout

pytestmark = pytest.mark.slow  # every config through `accelerate launch`

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
ACCELERATE = [str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
SHRINK = ["--image_size", "32", "--max_train_steps", "2", "--per_device_train_batch_size", "8",
          "--dataloader_num_workers", "0", "--logging_steps", "1"]  # fmt: skip
TINY_VIT = ["--model", "vit-tiny", "--model_overrides", "{patch_size: 8, num_hidden_layers: 2}"]
# A DenseNet config keeps its preset's name and layout (four dense blocks): one narrow layer per block.
TINY_DENSENET = ["--model_overrides", "{block_config: [1, 1, 1, 1], growth_rate: 8}"]
# Where each corpus's phantoms are, below the corpora fixture (the unions read nih/, chexpert/ and mimic/ there).
FOLDERS = {"nih-chestxray14": "nih", "chexpert": "chexpert", "mimic-cxr": "mimic", "covidx": "covidx"}


def config(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


PRETRAIN = [path for path in CONFIGS if config(path)["dataset"].startswith("pretrain-") or "pretrain" in path.stem]
FINETUNE = [path for path in CONFIGS if path not in PRETRAIN]


def launch(recipe: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ACCELERATE, f"recipes/{recipe}.py", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> Path:
    """Phantoms in every layout; also the pre-training unions' data_dir (nih/, chexpert/, mimic/)."""
    root = tmp_path_factory.mktemp("corpora")
    generate_phantoms(root / "nih", 120, size=40, seed=1, difficulty="easy")
    for layout, folder, seed in (("chexpert", "chexpert", 2), ("mimic-cxr", "mimic", 3), ("covidx", "covidx", 4)):
        write_phantom_layout(root / folder, 160, layout=layout, size=40, seed=seed, difficulty="easy")
    return root


def data_dir(corpora: Path, dataset: str) -> Path:
    return corpora if dataset.startswith("pretrain-") else corpora / FOLDERS[dataset]


@pytest.fixture(scope="module")
def pretrained(corpora, tmp_path_factory) -> dict[str, Path]:
    """Each pre-training config run once; keyed by the config's own output_dir, which fine-tuning configs name."""
    outputs = {}
    for path in PRETRAIN:
        values = config(path)
        output = tmp_path_factory.mktemp(path.stem)
        done = launch("pretrain", "--config", str(path), "--data_dir", str(data_dir(corpora, values["dataset"])),
                      "--output_dir", str(output), *TINY_VIT, *SHRINK)  # fmt: skip
        assert done.returncode == 0, f"{path.name}: {done.stderr[-3000:]}"
        outputs[values["output_dir"]] = output
    return outputs


@pytest.mark.parametrize("path", PRETRAIN, ids=lambda path: path.stem)
def test_pretraining_config_runs_end_to_end(path, pretrained, corpora):
    values = config(path)
    output = pretrained[values["output_dir"]]
    assert (output / "model.safetensors").stat().st_size > 0
    assert json.loads((output / "config.json").read_text())["architectures"] == ["CXRViTMAEForPreTraining"]
    training_args = json.loads((output / "training_args.json").read_text())
    assert training_args["dataset"] == values["dataset"] and training_args["max_train_steps"] == 2
    # The phantoms are recorded (for a union, its parts), so that no card calls them NIH / CheXpert / MIMIC images.
    corpus_dir = data_dir(corpora, values["dataset"])
    assert training_args["synthetic_corpus"] == synthetic_corpus(values["dataset"], corpus_dir) is not None
    train = load_cxr_dataset(values["dataset"], corpus_dir)["train"]
    assert training_args["n_train_images"] == len(train)
    if values["dataset"].startswith("pretrain-"):
        assert all(training_args["synthetic_corpus"]["parts"].values())
        parts = {"nih-chestxray14", "chexpert"} | ({"mimic-cxr"} if values["dataset"] == "pretrain-0.5m" else set())
        assert set(train["source"]) == parts
    assert_readable_png(output / "figures" / "training_curves.png")
    for figure in (output / "figures").glob("reconstruction_epoch*.png"):
        assert_readable_png(figure)


@pytest.mark.parametrize("path", FINETUNE, ids=lambda path: path.stem)
def test_finetuning_config_runs_end_to_end(path, pretrained, corpora, tmp_path):
    values = config(path)
    dataset, options = values["dataset"], values.get("dataset_options") or {}
    model = ["--model", str(pretrained[values["model"]])] if values["model"] in pretrained else []
    if values["model"].startswith("densenet"):
        model = TINY_DENSENET
    output = tmp_path / "run"
    done = launch("finetune", "--config", str(path), "--data_dir", str(data_dir(corpora, dataset)),
                  "--output_dir", str(output), *model, *SHRINK, "--per_device_eval_batch_size", "32",
                  "--n_bootstrap", "20")  # fmt: skip
    assert done.returncode == 0, f"{path.name}: {done.stderr[-3000:]}"

    metrics = json.loads((output / "metrics.json").read_text())
    test = load_cxr_dataset(dataset, data_dir(corpora, dataset), **options)["test"]
    assert (metrics["dataset"], metrics["split"], metrics["n_images"]) == (dataset, "test", len(test))
    assert metrics["split_source"] == split_source(dataset, "test", **options)
    assert metrics["synthetic_corpus"] == synthetic_corpus(dataset, data_dir(corpora, dataset))
    assert (metrics["accuracy"] is not None) == (dataset == "covidx")
    assert json.loads((output / "config.json").read_text())["image_size"] == 32
    for figure in ("roc_test.png", "training_curves.png"):
        assert_readable_png(output / "figures" / figure)

    assert cli(["push", str(output), "--repo-id", "cxr-vitmae/test", "--dry-run", str(tmp_path / "upload")]) == 0
    card = (tmp_path / "upload" / "README.md").read_text()
    name = {"nih-chestxray14": "NIH ChestX-ray14", "chexpert": "CheXpert", "mimic-cxr": "MIMIC-CXR-JPG",
            "covidx": "COVIDx CXR"}[dataset]  # fmt: skip
    assert f"synthetic phantoms in {name}'s format" in card
    assert f"split `test` ({metrics['split_source']})" in card


def test_a_recipe_that_cannot_run_refuses_before_training(corpora, tmp_path):
    covidx = ROOT / "recipes" / "configs" / "finetune_vits_covidx.yaml"
    done = launch("finetune", "--config", str(covidx), "--data_dir", str(corpora / "covidx"), "--output_dir",
                  str(tmp_path / "covidx"), *TINY_VIT, *SHRINK, "--dataset_options",
                  "{version: 9A, validation_fraction: 0}")  # fmt: skip
    assert done.returncode != 0 and "has no validation split" in done.stderr
    assert not (tmp_path / "covidx" / "training_args.json").exists()  # nothing trained, nothing recorded

    chexpert = ROOT / "recipes" / "configs" / "finetune_vits_chexpert.yaml"
    done = launch("finetune", "--config", str(chexpert), "--data_dir", str(corpora / "chexpert"), "--output_dir",
                  str(tmp_path / "chexpert"), *TINY_VIT, *SHRINK, "--dataset_options",
                  "{test_split: chexlocalize}")  # fmt: skip
    assert done.returncode != 0 and "no CheXlocalize test labels" in done.stderr
    assert not (tmp_path / "chexpert" / "training_args.json").exists()
