"""`cxr-vitmae push` and the recipes' `--push_to_hub`, end to end against a local fake Hub (tests/fake_hub.py)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import yaml
from fake_hub import FakeHub
from huggingface_hub import ModelCard
from test_model_card import make_model_dir, model_index_values
from test_recipes import ROOT, TINY, finetune_command

from cxr_vitmae.cli import main as cli
from cxr_vitmae.evaluation.figures import plot_reconstructions, plot_roc_curves, plot_training_curves
from cxr_vitmae.hub.push import upload_set

TOKEN = "hf_fake_token"


@pytest.fixture
def hub(monkeypatch):
    """A fake Hub that huggingface_hub talks to as it would to HF_ENDPOINT. huggingface_hub reads HF_ENDPOINT and
    HF_HUB_OFFLINE (which conftest sets) at import time, so the constants derived from them are set here as those
    variables would have set them; HF_TOKEN is read per call."""
    with FakeHub() as server:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        monkeypatch.setattr(
            huggingface_hub.constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            server.url + "/{repo_id}/resolve/{revision}/{filename}",
        )
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def add_figures(model_dir: Path, *, reconstruction: bool) -> None:
    """The figures a recipe writes: ROC and training curves, and optionally an MAE reconstruction panel."""
    scores = torch.rand(40).numpy()
    plot_roc_curves(
        {"Atelectasis": ([0.0, 0.3, 1.0], [0.0, 0.7, 1.0])},
        {"Atelectasis": 0.7},
        model_dir / "figures" / "roc_test.png",
    )
    plot_training_curves(
        [{"step": i, "loss": float(s)} for i, s in enumerate(scores)], model_dir / "figures" / "training_curves.png"
    )
    if reconstruction:
        images = torch.rand(2, 3, 32, 32)
        plot_reconstructions(images, images, images, model_dir / "figures" / "reconstruction_epoch001.png")


def set_dataset(model_dir: Path, dataset: str) -> None:
    """Record `dataset` as the training corpus (training_args.json) and the evaluated one (metrics.json)."""
    for name in ("training_args.json", "metrics.json"):
        path = model_dir / name
        if path.exists():
            path.write_text(json.dumps({**json.loads(path.read_text()), "dataset": dataset}))


def read_tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    model_dir = make_model_dir(tmp_path_factory.mktemp("push") / "classifier", "vit-classifier")
    add_figures(model_dir, reconstruction=False)
    (model_dir / "checkpoints" / "step-00000001").mkdir(parents=True)
    (model_dir / "checkpoints" / "step-00000001" / "model.safetensors").write_bytes(b"not for the Hub")
    return model_dir


def test_push_uploads_exactly_the_dry_run_set(hub, classifier_dir, tmp_path, capsys):
    dry_run = tmp_path / "dry-run"
    assert cli(["push", str(classifier_dir), "--repo-id", "cxr-lab/tiny", "--dry-run", str(dry_run)]) == 0
    assert not hub.requests, "a dry run must not talk to the Hub"
    assert cli(["push", str(classifier_dir), "--repo-id", "cxr-lab/tiny"]) == 0
    assert f"{hub.url}/cxr-lab/tiny/commit/" in capsys.readouterr().out

    uploaded = hub.repos["cxr-lab/tiny"].files
    assert uploaded == read_tree(dry_run)  # same paths, byte-identical content
    for name in ("model.safetensors", "config.json", "metrics.json", "training_args.json", "figures/roc_test.png"):
        assert uploaded[name] == (classifier_dir / name).read_bytes(), name
    expected = {
        "README.md",
        "config.json",
        "preprocessor_config.json",
        "model.safetensors",
        "modeling_cxr_vitmae.py",
        "configuration_cxr_vitmae.py",
        "image_processing_cxr.py",
        "metrics.json",
        "training_args.json",
        "figures/roc_test.png",
        "figures/training_curves.png",
    }
    assert expected <= set(uploaded) and not any(name.startswith("checkpoints/") for name in uploaded)

    # The card: valid YAML, a model-index equal to metrics.json, widget examples that are uploaded phantom PNGs.
    readme = uploaded["README.md"].decode()
    metadata = yaml.safe_load(readme.split("---\n", 2)[1])
    metrics = json.loads(uploaded["metrics.json"])
    card = ModelCard(readme)
    assert model_index_values(card)[("roc_auc", None)] == metrics["mean_auroc"]
    for name, values in metrics["per_class"].items():
        assert model_index_values(card).get(("roc_auc", name)) == values["auroc"]
    for example in metadata["widget"]:
        path_in_repo = example["src"].removeprefix(f"{hub.url}/cxr-lab/tiny/resolve/main/")
        assert path_in_repo.startswith("examples/phantom_") and uploaded[path_in_repo].startswith(b"\x89PNG")

    # What the client did: the Hub validated the README's YAML, and every call carried the token.
    validated = [json.loads(request.body)["content"] for request in hub.calls("/api/validate-yaml")]
    assert validated == [readme]
    assert all(request.authorization == f"Bearer {TOKEN}" for request in hub.requests if request.method == "POST")


def test_private_reaches_the_server(hub, classifier_dir):
    assert cli(["push", str(classifier_dir), "--repo-id", "cxr-lab/private-one", "--private"]) == 0
    assert cli(["push", str(classifier_dir), "--repo-id", "cxr-lab/public-one"]) == 0
    created = {json.loads(request.body)["name"]: json.loads(request.body) for request in hub.calls("/repos/create")}
    assert (created["private-one"]["visibility"], created["public-one"]["visibility"]) == ("private", "public")
    assert (hub.repos["cxr-lab/private-one"].visibility, hub.repos["cxr-lab/public-one"].visibility) == (
        "private",
        "public",
    )


def test_pushing_again_commits_to_the_existing_repository(hub, classifier_dir):
    for _ in range(2):
        assert cli(["push", str(classifier_dir), "--repo-id", "cxr-lab/again"]) == 0
    assert len(hub.repos["cxr-lab/again"].commits) == 2


@pytest.mark.parametrize("dataset", ["chexpert", "mimic-cxr", "pretrain-0.3m", "pretrain-0.5m"])
def test_refuses_images_derived_from_chexpert_or_mimic(hub, dataset, tmp_path, capsys):
    kind = "pretrained-encoder" if dataset.startswith("pretrain") else "vit-classifier"
    model_dir = make_model_dir(tmp_path / "model", kind, dataset="nih-chestxray14")
    set_dataset(model_dir, dataset)
    add_figures(model_dir, reconstruction=True)
    capsys.readouterr()

    assert cli(["push", str(model_dir), "--repo-id", "cxr-lab/x"]) == 1
    stderr = capsys.readouterr().err.strip()
    assert stderr.count("\n") == 0 and "Traceback" not in stderr
    assert str(model_dir / "figures" / "reconstruction_epoch001.png") in stderr
    assert ("CheXpert" if dataset != "mimic-cxr" else "MIMIC-CXR") in stderr
    assert not hub.requests, "nothing may reach the Hub"

    assert cli(["push", str(model_dir), "--repo-id", "cxr-lab/x", "--dry-run", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()

    # Plots of numbers are no corpus images: without the reconstruction the same directory is published.
    (model_dir / "figures" / "reconstruction_epoch001.png").unlink()
    assert {"figures/roc_test.png", "figures/training_curves.png"} <= set(upload_set(model_dir, "cxr-lab/x"))


def test_the_metrics_corpus_counts_too(tmp_path):
    """A model trained on NIH but evaluated on CheXpert draws its figures from CheXpert as well."""
    model_dir = make_model_dir(tmp_path / "model", "vit-classifier")
    metrics = json.loads((model_dir / "metrics.json").read_text())
    (model_dir / "metrics.json").write_text(json.dumps({**metrics, "dataset": "chexpert"}))
    add_figures(model_dir, reconstruction=True)
    with pytest.raises(ValueError, match="reconstruction_epoch001.png: refusing .* CheXpert"):
        upload_set(model_dir, "cxr-lab/x")


def test_images_from_nih_or_phantoms_are_published(tmp_path):
    model_dir = make_model_dir(tmp_path / "model", "pretrained-encoder")
    add_figures(model_dir, reconstruction=True)
    files = upload_set(model_dir, "cxr-lab/encoder")
    assert "figures/reconstruction_epoch001.png" in files
    # An encoder has no widget, so no examples are uploaded for it.
    assert not any(name.startswith("examples/") for name in files)


def test_image_of_an_unrecorded_corpus_is_refused(tmp_path):
    model_dir = make_model_dir(tmp_path / "model", "vit-classifier")
    (model_dir / "training_args.json").unlink()
    (model_dir / "metrics.json").unlink()
    add_figures(model_dir, reconstruction=True)
    with pytest.raises(ValueError, match="reconstruction_epoch001.png: cannot tell which corpus"):
        upload_set(model_dir, "cxr-lab/x")


def test_bad_input_is_one_line(hub, classifier_dir, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "stale.txt").write_text("left over")
    cases = {
        "exists and is not empty": ["--repo-id", "cxr-lab/x", "--dry-run", str(tmp_path / "full")],
        "expected a Hub repository id ORG/NAME": ["--repo-id", "no-namespace"],
    }
    for message, flags in cases.items():
        assert cli(["push", str(classifier_dir), *flags]) == 1
        stderr = capsys.readouterr().err.strip()
        assert message in stderr and stderr.count("\n") == 0, stderr
    assert cli(["push", str(tmp_path), "--repo-id", "cxr-lab/x"]) == 1
    assert "not a model directory (no config.json)" in capsys.readouterr().err
    assert not hub.requests


def test_rejected_credentials_are_one_line(hub, classifier_dir, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")
    assert cli(["push", str(classifier_dir), "--repo-id", "cxr-lab/x"]) == 1
    stderr = capsys.readouterr().err.strip()
    assert "401 Unauthorized" in stderr and stderr.count("\n") == 0, stderr
    assert not hub.repos


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipes_check_the_hub_settings_before_training(tmp_path):
    finetune, pretrain = _recipe("finetune"), _recipe("pretrain")
    missing = tmp_path / "no-data"  # never read: the checks come first
    with pytest.raises(SystemExit, match="--push_to_hub needs --hub_model_id"):
        finetune.main(["--output_dir", str(tmp_path / "out"), "--data_dir", str(missing), "--push_to_hub"])
    with pytest.raises(SystemExit, match="reconstruction figures .* may not be published"):
        pretrain.main(
            ["--output_dir", str(tmp_path / "out"), "--data_dir", str(missing), "--dataset", "pretrain-0.3m"]
            + ["--push_to_hub", "--hub_model_id", "cxr-lab/encoder"]
        )
    assert not (tmp_path / "out").exists()


# Runs recipes one after the other in one fresh interpreter: their own `main`, the user's environment variables, but
# one interpreter start-up (most of a tiny run's time) instead of one per recipe.
RECIPE_DRIVER = """
import json, runpy, sys
for recipe, argv in json.loads(sys.argv[1]):
    runpy.run_path(f"recipes/{recipe}.py")["main"](argv)
"""


def run_recipes(runs: list[tuple[str, list[str]]], hub: FakeHub) -> str:
    """Run `(recipe, argv)` pairs configured as a user's shell would configure them; their stdout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}
    command = [sys.executable, "-c", RECIPE_DRIVER, json.dumps(runs)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def uploaded_as_planned(hub: FakeHub, output_dir: Path, repo_id: str) -> dict[str, bytes]:
    """The repository's files, checked to be exactly the upload set of `output_dir`."""
    expected = {
        name: source if isinstance(source, bytes) else source.read_bytes()
        for name, source in upload_set(output_dir, repo_id, endpoint=hub.url).items()
    }
    assert hub.repos[repo_id].files == expected
    return hub.repos[repo_id].files


@pytest.mark.slow
def test_recipes_push_their_output_dir(hub, phantoms, tmp_path):
    """MAE pre-training pushed as an encoder, then fine-tuning from it pushed as a private classifier whose card
    names the encoder as its base model."""
    encoder_dir, classifier_dir = tmp_path / "encoder", tmp_path / "classifier"
    pretrain = [
        "--data_dir", str(phantoms), "--output_dir", str(encoder_dir), "--model", "vit-tiny",
        "--model_overrides", TINY, "--image_size", "32", "--per_device_train_batch_size", "8", "--max_train_steps", "2",
        "--dataset_options", "{validation_fraction: 0.3}", "--push_to_hub", "--hub_model_id", "cxr-lab/encoder",
    ]  # fmt: skip
    finetune = finetune_command(phantoms, classifier_dir, "--num_train_epochs", "1", "--model", str(encoder_dir))[2:]
    finetune += ["--push_to_hub", "--hub_model_id", "cxr-lab/classifier", "--hub_private_repo"]
    output = run_recipes([("pretrain", pretrain), ("finetune", finetune)], hub)

    assert f"pushed {encoder_dir} to {hub.url}/cxr-lab/encoder/commit/" in output
    encoder = uploaded_as_planned(hub, encoder_dir, "cxr-lab/encoder")
    assert hub.repos["cxr-lab/encoder"].visibility == "public"
    # Reconstructions of phantoms in NIH's format may be published.
    assert any(name.startswith("figures/reconstruction_epoch") for name in encoder), sorted(encoder)
    assert "pipeline_tag: image-feature-extraction" in encoder["README.md"].decode()

    assert f"pushed {classifier_dir} to {hub.url}/cxr-lab/classifier/commit/" in output
    classifier = uploaded_as_planned(hub, classifier_dir, "cxr-lab/classifier")
    assert hub.repos["cxr-lab/classifier"].visibility == "private"
    record = json.loads(classifier["training_args.json"])
    assert (record["recipe"], record["dataset"], record["base_model"]) == (
        "finetune",
        "nih-chestxray14",
        "cxr-lab/encoder",
    )
    assert record["n_train_images"] > 0 and record["dataset_options"] == {"validation_fraction": 0.3}
    card = ModelCard(classifier["README.md"].decode())
    assert card.data.base_model == "cxr-lab/encoder"
    metrics = json.loads(classifier["metrics.json"])
    assert model_index_values(card)[("roc_auc", None)] == metrics["mean_auroc"]
