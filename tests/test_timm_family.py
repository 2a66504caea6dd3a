"""The timm family (`--model timm:ARCH`): any timm architecture through the recipe, card, Grad-CAM and export-native,
started from scratch with timm's own initialisation or from a stock timm checkpoint (a local directory, or a Hub
repository read once and then from the cache offline)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from fake_hub import FakeHub
from model_helpers import assert_readable_png, randomize_, run_without_package
from test_recipes import ROOT
from timm.models import save_for_hf
from transformers import AutoModelForImageClassification, TimmWrapperConfig, TimmWrapperForImageClassification

from cxr_vitmae import CXRTimmConfig, TimmForChestXray
from cxr_vitmae.cli import main as cli
from cxr_vitmae.errors import InputError
from cxr_vitmae.explain.gradcam import compute_gradcam, gradcam_target
from cxr_vitmae.hub.model_card import build_model_card
from cxr_vitmae.hub.provenance import published_id
from cxr_vitmae.model_families import family_for_preset, family_of
from cxr_vitmae.training.models import build_classifier

LABELS = ["Atelectasis", "Effusion", "Nodule"]
TOKEN = "hf_fake_token"


def new_classifier(model: str, drop_path: float = 0.0) -> TimmForChestXray:
    return build_classifier(
        model, label_names=LABELS, single_label=False, image_size=64, drop_path=drop_path, overrides={}
    )


def test_timm_names_belong_to_the_timm_family():
    assert family_for_preset("timm:resnet50").name == "timm"
    assert family_for_preset("timm:convnext_tiny").name == "timm" and family_for_preset("resnet50") is None
    model = new_classifier("timm:efficientnet_b0")
    assert family_of(model).name == "timm" and model.config.architecture == "efficientnet_b0"
    assert model.config.id2label == dict(enumerate(LABELS)) and model.config.image_size == 64


def test_an_unknown_architecture_is_one_clear_error():
    with pytest.raises(InputError, match=r"--model timm:resnet_nope: architecture 'resnet_nope' is not a timm model"):
        new_classifier("timm:resnet_nope")


def test_networks_without_stochastic_depth_or_with_a_fixed_input_size_say_so_before_training():
    assert new_classifier("timm:vgg11").config.drop_path_rate == 0.0  # no drop path asked: nothing passed to timm
    with pytest.raises(InputError, match=r"--model timm:vgg11 has no stochastic depth .* --drop_path 0"):
        new_classifier("timm:vgg11", drop_path=0.2)
    with pytest.raises(InputError, match="takes only 224 px input, not image_size 64: run it at --image_size 224"):
        new_classifier("timm:vit_tiny_patch16_224")


def test_a_fresh_model_keeps_timms_initialisation_and_draws_a_new_head():
    torch.manual_seed(5)
    ours = TimmForChestXray(CXRTimmConfig.from_preset("timm:resnet18", num_labels=3))
    torch.manual_seed(5)
    reference = timm.create_model("resnet18", num_classes=3)
    theirs = reference.state_dict()
    # Every weight but the head is timm's own draw (Kaiming for the convolutions), not transformers' N(0, 0.02).
    for name, tensor in ours.timm_model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(tensor, theirs[name]), name
    assert ours.timm_model.conv1.weight.std().item() > 0.02 * 1.1
    assert ours.timm_model.fc.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert not ours.timm_model.fc.bias.any()


def test_the_loss_ignores_unknown_labels():
    model = TimmForChestXray(CXRTimmConfig.from_preset("timm:resnet10t", num_labels=3)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([[1.0, float("nan"), 0.0], [float("nan"), float("nan"), 1.0]])
    with torch.no_grad():
        loss = model(pixel_values=pixels, labels=labels).loss
        logits = model(pixel_values=pixels).logits
    known = ~labels.isnan()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], labels[known])
    torch.testing.assert_close(loss, expected)


def test_gradient_checkpointing_where_timm_has_it_and_one_clear_error_where_not():
    model = new_classifier("timm:resnet10t")
    model.gradient_checkpointing_enable()
    assert model.timm_model.grad_checkpointing
    model.train()
    model(torch.randn(2, 3, 64, 64), labels=torch.ones(2, len(LABELS))).loss.backward()
    with pytest.raises(ValueError, match="timm:dla46_c does not support gradient checkpointing"):
        new_classifier("timm:dla46_c").gradient_checkpointing_enable()


@pytest.mark.parametrize("saver", ["timm", "transformers"])
def test_a_stock_timm_checkpoint_starts_the_network_with_a_new_head(saver, tmp_path):
    directory = tmp_path / saver
    if saver == "timm":  # timm's own Hub layout (timm/resnet10t.c3_in1k and the like)
        source = randomize_(timm.create_model("resnet10t", num_classes=1000))
        save_for_hf(source, directory, safe_serialization=True)
        source_state = source.state_dict()
    else:  # transformers' TimmWrapperForImageClassification.save_pretrained
        stock = randomize_(TimmWrapperForImageClassification(TimmWrapperConfig(architecture="resnet10t", num_labels=7)))
        stock.save_pretrained(directory)
        source_state = stock.timm_model.state_dict()
    model = new_classifier(str(directory), drop_path=0.1)
    assert isinstance(model, TimmForChestXray) and model.config.num_labels == 3
    assert model.config.architecture == "resnet10t" and model.config.drop_path_rate == 0.1
    for name, tensor in model.timm_model.state_dict().items():
        if name.startswith("fc."):
            assert tensor.shape[0] == 3
        else:
            assert torch.equal(tensor, source_state[name]), name


def test_a_one_channel_checkpoint_is_adapted_to_the_processors_three_channels(tmp_path):
    source = randomize_(timm.create_model("resnet10t", num_classes=10, in_chans=1)).eval()
    save_for_hf(source, tmp_path, model_args={"in_chans": 1})
    model = new_classifier(str(tmp_path)).eval()
    assert model.config.num_channels == 3 and model.timm_model.conv1[0].in_channels == 3
    gray = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # a gray image in every channel gives the stored model's features
        torch.testing.assert_close(
            model.timm_model.forward_features(gray.expand(-1, 3, -1, -1)), source.forward_features(gray)
        )


def test_the_recipes_drop_path_wins_over_a_stored_one(tmp_path):
    save_for_hf(timm.create_model("resnet10t", num_classes=10), tmp_path, model_args={"drop_path_rate": 0.3})
    model = new_classifier(str(tmp_path), drop_path=0.05)
    assert model.config.drop_path_rate == 0.05 and "drop_path_rate" not in (model.config.model_args or {})


def test_weights_of_another_architecture_are_refused(tmp_path):
    save_for_hf(timm.create_model("resnet18", num_classes=10), tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architecture": "resnet10t"}))
    with pytest.raises(InputError, match="do not fit timm's resnet10t"):
        new_classifier(str(tmp_path))


@pytest.mark.slow
def test_a_hub_timm_checkpoint_is_downloaded_once_then_read_offline_from_the_cache(tmp_path):
    source = randomize_(timm.create_model("resnet10t", num_classes=1000))
    save_for_hf(source, tmp_path / "checkpoint", safe_serialization=True)
    script = textwrap.dedent(
        """\
        import sys, torch, cxr_vitmae
        from cxr_vitmae.training.models import build_classifier
        model = build_classifier(sys.argv[1], label_names=["a", "b"], single_label=False, image_size=64,
                                 drop_path=0.0, overrides={})
        torch.save(model.timm_model.state_dict(), sys.argv[2])
        """
    )
    with FakeHub(token=TOKEN) as hub:
        api = huggingface_hub.HfApi(endpoint=hub.url, token=TOKEN)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
            api.create_repo("timm-lab/resnet10t.fake_in1k")
            api.upload_folder(repo_id="timm-lab/resnet10t.fake_in1k", folder_path=tmp_path / "checkpoint")
        for offline in ("0", "1"):
            env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": offline, "HF_HOME": str(tmp_path / "hf")}
            out = tmp_path / f"state-{offline}.pt"
            done = subprocess.run(
                [sys.executable, "-c", script, "timm-lab/resnet10t.fake_in1k", str(out)],
                env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
            state = torch.load(out)
            for name, tensor in source.state_dict().items():
                if not name.startswith("fc."):
                    assert torch.equal(state[name], tensor), name
            if offline == "0":
                requests_online = len(hub.requests)
        assert len(hub.requests) == requests_online, "offline, nothing may reach the Hub"


def test_a_run_started_from_a_hub_id_names_it_as_its_base_model(tmp_path):
    assert published_id("timm/resnet18.a1_in1k") == "timm/resnet18.a1_in1k"
    assert published_id("timm:resnet18") is None  # a preset
    local = tmp_path / "timm" / "resnet18"  # a local directory that reads like an id is a directory, not published
    TimmForChestXray(CXRTimmConfig.from_preset("timm:resnet10t", num_labels=2)).save_pretrained(local)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert published_id("timm/resnet18") is None
    # What the recipe records as `base_model` (write_training_args) becomes the card's metadata.
    card = build_model_card(local, "lab/cxr-resnet18", base_model=published_id("timm/resnet18.a1_in1k"))
    assert "base_model: timm/resnet18.a1_in1k" in str(card)


def test_a_saved_directory_loads_without_the_package(tmp_path):
    model = randomize_(TimmForChestXray(CXRTimmConfig.from_preset("timm:convnext_atto", num_labels=3))).eval()
    model.save_pretrained(tmp_path / "model")
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.save(pixels, tmp_path / "pixels.pt")
    stdout = run_without_package(
        """
        import sys, torch
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
        with torch.no_grad():
            print(model(torch.load(sys.argv[2])).logits.tolist())
        """,
        tmp_path,
        str(tmp_path / "model"),
        str(tmp_path / "pixels.pt"),
    )
    with torch.no_grad():
        expected = model(pixels).logits
    torch.testing.assert_close(torch.tensor(json.loads(stdout.strip().splitlines()[-1])), expected, rtol=0, atol=1e-5)


def test_gradcam_targets_the_last_stage_and_refuses_token_networks():
    resnet = TimmForChestXray(CXRTimmConfig.from_preset("timm:resnet10t", num_labels=3))
    assert gradcam_target(resnet)[0] is resnet.timm_model.layer4
    convnext = TimmForChestXray(CXRTimmConfig.from_preset("timm:convnext_atto", num_labels=3))
    assert gradcam_target(convnext)[0] is convnext.timm_model.stages[3]
    vit = TimmForChestXray(CXRTimmConfig.from_preset("timm:vit_tiny_patch16_224", num_labels=3))
    with pytest.raises(InputError, match="needs a convolutional network"):
        gradcam_target(vit)
    # LeViT names convolution-free stages that end in tokens: refused from the forward pass, naming the shape.
    levit = TimmForChestXray(CXRTimmConfig.from_preset("timm:levit_128s", num_labels=3, image_size=224))
    with pytest.raises(InputError, match=r"levit_128s: its last stage gives a 3-D output \(1, 16, 384\)"):
        compute_gradcam(levit, torch.randn(1, 3, 224, 224), 0)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["timm:resnet18", "timm:convnext_atto"])
def test_the_recipe_card_gradcam_and_export_run_end_to_end(model, phantoms, tmp_path):
    output = tmp_path / "run"
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "recipes/finetune.py", "--data_dir", str(phantoms),
        "--output_dir", str(output), "--model", model, "--image_size", "32", "--per_device_train_batch_size", "8",
        "--num_train_epochs", "1", "--n_bootstrap", "20", "--drop_path", "0.05",
        "--dataset_options", "{validation_fraction: 0.3}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    config = json.loads((output / "config.json").read_text())
    assert config["architecture"] == model.removeprefix("timm:") and config["drop_path_rate"] == 0.05
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["split"] == "test" and 0 <= metrics["mean_auroc"] <= 1

    card = build_model_card(output, "cxr-lab/baseline").content
    assert f"timm `{config['architecture']}`" in card and "- timm" in card.split("---")[1]
    assert "started from the `" + model + "` preset, randomly initialised" in card

    image = sorted((phantoms / "images").iterdir())[0]
    assert cli(["gradcam", str(output), str(image), "--output", str(tmp_path / "cam.png")]) == 0
    assert_readable_png(tmp_path / "cam.png")

    assert cli(["export-native", str(output), str(tmp_path / "native")]) == 0
    assert not list((tmp_path / "native").glob("*.py"))
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.save(pixels, tmp_path / "pixels.pt")
    stdout = run_without_package(
        """
        import sys, torch
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained(sys.argv[1]).eval()
        with torch.no_grad():
            print(type(model).__name__, model(torch.load(sys.argv[2])).logits.tolist())
        """,
        tmp_path,
        str(tmp_path / "native"),
        str(tmp_path / "pixels.pt"),
    )
    name, logits = stdout.strip().splitlines()[-1].split(" ", 1)
    assert name == "TimmWrapperForImageClassification"
    ours = AutoModelForImageClassification.from_pretrained(output).eval()
    with torch.no_grad():
        expected = ours(pixels).logits
    torch.testing.assert_close(torch.tensor(json.loads(logits)), expected, rtol=0, atol=1e-5)
