"""The model-family registry (`cxr_vitmae.model_families`): a family added with one entry goes through the recipe, the
card and Grad-CAM without their code knowing it; no code outside the registry and the model files names a model type;
DenseNet directories saved before the registry load as they did."""

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from model_helpers import assert_readable_png
from safetensors.torch import load_file
from test_recipes import ROOT
from transformers import AutoModelForImageClassification

import cxr_vitmae  # noqa: F401  (registers the package's Auto classes)
from cxr_vitmae import model_families
from cxr_vitmae.cli import main as cli
from cxr_vitmae.hub.model_card import build_model_card
from cxr_vitmae.model_families import ModelFamily, families, family_for_preset, family_of, register_family

TESTS = Path(__file__).resolve().parent
# Where a model type may be spelled out: the registry and the model files (configurations, models, converters).
ALLOWED = (ROOT / "src" / "cxr_vitmae" / "model_families.py", ROOT / "src" / "cxr_vitmae" / "models")
CHECKED = [ROOT / "src" / "cxr_vitmae", ROOT / "recipes", ROOT / "scripts", ROOT / "app"]
# A DenseNet-121-layout classifier (one narrow layer per dense block) as `save_pretrained` wrote it before the
# registry existed (commit 816e6b8), with the logits it gave on a fixed input; the code files written beside it for
# remote code are left out, as the package itself loads it.
DENSENET_FIXTURE = TESTS / "fixtures" / "densenet_saved_2026_12"


def spelled_model_types(root: Path, model_types: set[str]) -> list[str]:
    """Every string literal equal to a model type in the Python files below `root`, as "path:line"."""
    found = []
    for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and node.value in model_types:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_code_outside_the_registry_and_the_model_files_names_a_model_type():
    model_types = {family.model_type for family in families()}
    assert {"cxr_vitmae", "cxr_densenet"} <= model_types
    offending = [
        hit
        for root in CHECKED
        for hit in spelled_model_types(root, model_types)
        if not any((ROOT / hit.split(":")[0]).is_relative_to(allowed) for allowed in ALLOWED)
    ]
    assert not offending, f"branch on the model family (cxr_vitmae.model_families), not on its type: {offending}"
    # The scan does find them where they belong, so an empty result above means something.
    assert spelled_model_types(ALLOWED[1], model_types)


def test_every_preset_and_model_type_has_one_family():
    assert family_for_preset("vit-small").name == "vit" and family_for_preset("densenet121").name == "densenet"
    assert family_for_preset("runs/my-model") is None
    assert family_of("cxr_densenet").layer_decay is False and family_of("cxr_vitmae").layer_decay is True
    vit = family_of("cxr_vitmae")
    with pytest.raises(ValueError, match="already belongs to the 'vit' family"):
        register_family(ModelFamily(**{**vit.__dict__, "name": "another-vit"}))
    with pytest.raises(ValueError, match="belongs to no cxr-vitmae model family"):
        family_of("bert")


@pytest.mark.slow
def test_a_family_added_with_one_entry_runs_through_the_recipe_card_and_gradcam(phantoms, tmp_path, monkeypatch):
    launcher = tmp_path / "finetune_with_extra_family.py"
    launcher.write_text(
        textwrap.dedent(
            f"""\
            import runpy, sys
            sys.path.insert(0, {str(TESTS)!r})
            import extra_family  # the one registry entry (and its model files)
            runpy.run_path({str(ROOT / "recipes" / "finetune.py")!r}, run_name="__main__")
            """
        )
    )
    output = tmp_path / "run"
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(launcher), "--data_dir", str(phantoms),
        "--output_dir", str(output), "--model", "tinycnn-s", "--image_size", "32", "--per_device_train_batch_size",
        "8", "--num_train_epochs", "2", "--n_bootstrap", "20", "--layer_decay", "0.75",
        "--dataset_options", "{validation_fraction: 0.3}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "layer decay None" in done.stdout  # the family has no transformer blocks
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "cxr_test_tinycnn" and config["image_size"] == 32
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["split"] == "test" and 0 <= metrics["mean_auroc"] <= 1

    # Registered in this process too, for the card and Grad-CAM, in a copy of the registry that the test drops.
    monkeypatch.setattr(model_families, "_FAMILIES", dict(model_families._FAMILIES))
    monkeypatch.syspath_prepend(str(TESTS))
    import extra_family

    register_family(extra_family.FAMILY)  # a no-op on first import, which registers it

    card = build_model_card(output, "cxr-lab/tinycnn").content
    assert "A TinyCNN (TinyCNN, width 8" in card and "tinycnn" in card.split("---")[1]  # description and tags
    image = sorted((phantoms / "images").iterdir())[0]
    assert cli(["gradcam", str(output), str(image), "--output", str(tmp_path / "cam.png")]) == 0
    assert_readable_png(tmp_path / "cam.png")
    assert extra_family.FAMILY.name == "tinycnn"


def test_a_densenet_directory_saved_before_the_registry_loads_unchanged():
    expected = json.loads((DENSENET_FIXTURE / "expected_logits.json").read_text())
    saved = load_file(DENSENET_FIXTURE / "model.safetensors")
    model = AutoModelForImageClassification.from_pretrained(DENSENET_FIXTURE).eval()
    assert type(model).__name__ == "DenseNetForChestXray" and family_of(model).name == "densenet"
    # The same parameter names, every one loaded.
    assert set(model.state_dict()) == set(saved)
    for name, tensor in saved.items():
        assert torch.equal(model.state_dict()[name], tensor), name
    pixels = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    torch.testing.assert_close(logits, torch.tensor(expected), rtol=0, atol=1e-5)
