"""`cxr-vitmae convert` for ViT checkpoints: each source written as its original code lays it out, converted, and held
against an independent forward (plain-torch MAE / ViT, timm itself, stock transformers)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from model_helpers import randomize_, save_like_mae
from reference_vit import as_finetuned_classifier, mae_forward, random_mae_state_dict, vit_classifier_logits
from safetensors.torch import save_file
from timm.models.vision_transformer import checkpoint_filter_fn
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    ViTMAEConfig,
    ViTMAEForPreTraining,
)

from cxr_vitmae import CXRViTMAEForPreTraining, CXRViTMAEModel, ViTMAEForChestXray
from cxr_vitmae.hub.checkpoint_loading import CheckpointError
from cxr_vitmae.hub.convert import convert_checkpoint
from cxr_vitmae.models.chest_xray_labels import CHEXPERT_COMPETITION_LABELS, NIH_CHESTXRAY14_LABELS
from cxr_vitmae.models.conversion_utils import ConversionError

# ViT-S widths (so the preset is inferred as the paper's vit-small) with 2 blocks at 64 px to stay fast.
VIT_S = {"dim": 384, "depth": 2, "mlp": 1536, "patch_size": 16, "grid": 4}
HEADS = 6


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_paper_pretraining_checkpoint(tmp_path):
    weights = random_mae_state_dict(**VIT_S, decoder_dim=512, decoder_depth=2, decoder_mlp=2048)
    path = save_like_mae(
        tmp_path / "vit-s_CXR_0.3M_mae.pth",
        weights,
        model="mae_vit_small_patch16_dec512d2b",
        mask_ratio=0.9,
        norm_pix_loss=False,
        input_size=224,
        blr=1.5e-4,
        epochs=800,
    )
    convert_checkpoint("medical-mae", path, tmp_path / "out")
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "out").eval()
    assert type(model) is CXRViTMAEForPreTraining
    assert (model.config.num_attention_heads, model.config.decoder_num_attention_heads) == (HEADS, 16)
    assert model.config.mask_ratio == 0.9 and model.config.decoder_num_hidden_layers == 2

    pixels, noise = torch.randn(2, 3, 64, 64), torch.rand(2, 16)
    with torch.no_grad():
        ours = model(pixels, noise=noise)
    loss, pred, mask = mae_forward(
        weights,
        pixels,
        noise,
        patch_size=16,
        mask_ratio=0.9,
        depth=2,
        num_heads=HEADS,
        decoder_depth=2,
        decoder_heads=16,
    )
    assert max_diff(ours.logits, pred) <= 1e-5
    assert abs(ours.loss.item() - loss.item()) <= 1e-5
    assert torch.equal(ours.mask, mask)


def test_pretraining_args_carry_the_objective(tmp_path):
    weights = random_mae_state_dict(**VIT_S, decoder_dim=512, decoder_depth=1, decoder_mlp=2048)
    path = save_like_mae(tmp_path / "ckpt.pth", weights, mask_ratio=0.75, norm_pix_loss=True)
    model = convert_checkpoint("medical-mae", path, tmp_path / "out").model
    assert model.config.mask_ratio == 0.75 and model.config.norm_pix_loss is True


@pytest.mark.parametrize(
    ("num_classes", "expected_labels"), [(14, NIH_CHESTXRAY14_LABELS), (5, CHEXPERT_COMPETITION_LABELS)]
)
def test_paper_finetuned_classifier(tmp_path, num_classes, expected_labels):
    weights = as_finetuned_classifier(random_mae_state_dict(**VIT_S), num_classes)
    path = save_like_mae(
        tmp_path / "vit-s_CXR_0.3M_mae_finetuned.pth",
        weights,
        model="vit_small_patch16",
        nb_classes=num_classes,
        global_pool=True,
    )
    convert_checkpoint("medical-mae", path, tmp_path / "out")
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out").eval()
    assert type(model) is ViTMAEForChestXray and model.config.use_mean_pooling
    assert [model.config.id2label[i] for i in range(num_classes)] == list(expected_labels)
    assert model.config.problem_type == "multi_label_classification"

    pixels = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ours = model(pixels).logits
    assert max_diff(ours, vit_classifier_logits(weights, pixels, patch_size=16, depth=2, num_heads=HEADS)) <= 1e-5


def timm_vit(**kwargs) -> torch.nn.Module:
    return randomize_(
        timm.create_model("vit_small_patch16_224", pretrained=False, img_size=64, depth=2, **kwargs)
    ).eval()


@pytest.mark.parametrize("global_pool", ["avg", "token"])
def test_timm_safetensors_classifier(tmp_path, global_pool):
    reference = timm_vit(num_classes=3, global_pool=global_pool)
    save_file(reference.state_dict(), tmp_path / "model.safetensors")
    model = convert_checkpoint("timm", tmp_path / "model.safetensors", tmp_path / "out", labels="covidx").model
    assert model.config.use_mean_pooling == (global_pool == "avg")
    assert model.config.problem_type == "single_label_classification"
    assert list(model.config.id2label.values()) == ["normal", "pneumonia", "COVID-19"]
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_diff(model(pixels).logits, reference(pixels)) <= 1e-5


def test_timm_encoder_only_port_in_a_hub_folder(tmp_path):
    reference = timm_vit(num_classes=0)
    (tmp_path / "port").mkdir()
    save_file(reference.state_dict(), tmp_path / "port" / "model.safetensors")
    convert_checkpoint("timm", tmp_path / "port", tmp_path / "out")
    model = AutoModel.from_pretrained(tmp_path / "out").eval()
    assert type(model) is CXRViTMAEModel
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_diff(model(pixels).last_hidden_state, reference.forward_features(pixels)) <= 1e-5


@pytest.mark.parametrize("global_pool", ["avg", "token"])
def test_imagenet_head_is_replaced_by_a_new_chest_xray_head(tmp_path, global_pool):
    imagenet = timm_vit(num_classes=1000, global_pool=global_pool)
    save_file(imagenet.state_dict(), tmp_path / "model.safetensors")
    result = convert_checkpoint("timm", tmp_path / "model.safetensors", tmp_path / "out", labels="chexpert")
    assert result.notes == ["replaced the 1000-class ImageNet head by a new, untrained chexpert head"]
    model = result.model
    assert list(model.config.id2label.values()) == list(CHEXPERT_COMPETITION_LABELS)
    assert model.classifier.weight.std().item() < 1e-3  # MAE fine-tuning init, nothing copied
    # Everything before the head is ImageNet's: the pooled, normalised features match timm's.
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.vit(pixels).last_hidden_state
        pooled = tokens[:, 1:].mean(1) if global_pool == "avg" else tokens[:, 0]
        features = imagenet.forward_head(imagenet.forward_features(pixels), pre_logits=True)
        assert max_diff(model.fc_norm(pooled), features) <= 1e-5


def test_position_table_resampled_for_another_resolution(tmp_path):
    reference = timm_vit(num_classes=14, global_pool="avg")
    save_file(reference.state_dict(), tmp_path / "model.safetensors")
    model = convert_checkpoint("timm", tmp_path / "model.safetensors", tmp_path / "out", image_size=96).model
    assert model.config.image_size == 96
    # timm's own way to load a checkpoint at another resolution.
    at_96 = timm.create_model(
        "vit_small_patch16_224", pretrained=False, img_size=96, depth=2, num_classes=14, global_pool="avg"
    ).eval()
    at_96.load_state_dict(checkpoint_filter_fn(reference.state_dict(), at_96))
    pixels = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert max_diff(model(pixels).logits, at_96(pixels)) <= 1e-5


def test_stock_transformers_vitmae_directory(tmp_path):
    config = ViTMAEConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=64,
        patch_size=16,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=64,
        mask_ratio=0.75,
    )
    stock = randomize_(ViTMAEForPreTraining(config)).eval()
    stock.save_pretrained(tmp_path / "stock")
    model = convert_checkpoint("hf-vitmae", tmp_path / "stock", tmp_path / "out").model
    assert model.config.layer_norm_eps == config.layer_norm_eps and model.config.mask_ratio == 0.75

    pixels, noise = torch.randn(2, 3, 64, 64), torch.rand(2, 16)
    with torch.no_grad():
        ours, theirs = model(pixels, noise=noise), stock(pixels, noise=noise)
    assert max_diff(ours.logits, theirs.logits) <= 1e-5
    assert abs(ours.loss.item() - theirs.loss.item()) <= 1e-5
    assert torch.equal(ours.mask, theirs.mask)


class RunsAShellCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_disallowed_global_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    weights = random_mae_state_dict(**VIT_S)
    torch.save({"model": weights, "payload": RunsAShellCommand(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"refused to unpickle the global (posix|os)\.system"):
        convert_checkpoint("medical-mae", tmp_path / "evil.pth", tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_truncated_file(tmp_path):
    path = save_like_mae(tmp_path / "full.pth", random_mae_state_dict(**VIT_S))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth: not a readable PyTorch checkpoint"):
        convert_checkpoint("medical-mae", truncated, tmp_path / "out")


def test_unknown_keys_and_shape_mismatches_are_listed(tmp_path):
    weights = as_finetuned_classifier(random_mae_state_dict(**VIT_S), 14)
    weights["blocks.0.attn.relative_position_bias_table"] = torch.zeros(3)
    weights["blocks.1.mlp.fc2.bias"] = torch.zeros(7)
    save_like_mae(tmp_path / "odd.pth", weights)
    with pytest.raises(ConversionError) as error:
        convert_checkpoint("medical-mae", tmp_path / "odd.pth", tmp_path / "out")
    message = str(error.value)
    assert "unknown keys: vit.layers.0.attn.relative_position_bias_table" in message
    assert "shape mismatches: vit.layers.1.mlp.fc2.bias (7,) vs (384,)" in message


def test_a_state_dict_without_blocks_is_named_not_a_key_error(tmp_path):
    weights = {key: value for key, value in random_mae_state_dict(**VIT_S).items() if not key.startswith("blocks.")}
    save_like_mae(tmp_path / "headless.pth", weights)
    with pytest.raises(ConversionError, match=r"no blocks\.0\.attn\.qkv\.weight, blocks\.0\.mlp\.fc1\.weight"):
        convert_checkpoint("medical-mae", tmp_path / "headless.pth", tmp_path / "out")


def test_wrong_label_set_for_the_head(tmp_path):
    save_like_mae(tmp_path / "c.pth", as_finetuned_classifier(random_mae_state_dict(**VIT_S), 5))
    with pytest.raises(ConversionError, match="--labels nih has 14 classes but the checkpoint's head has 5"):
        convert_checkpoint("medical-mae", tmp_path / "c.pth", tmp_path / "out", labels="nih")


def cli(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "cxr-vitmae"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_converts_and_rejects_another_architecture(tmp_path):
    path = save_like_mae(tmp_path / "vit.pth", as_finetuned_classifier(random_mae_state_dict(**VIT_S), 14))
    done = cli("convert", "--source", "medical-mae", "--checkpoint", str(path), "--output", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "ViTMAEForChestXray saved to" in done.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file() and (
        tmp_path / "out" / "preprocessor_config.json"
    ).is_file()

    resnet = timm.create_model("resnet18", pretrained=False, num_classes=14)
    torch.save({"model": resnet.state_dict(), "epoch": 1}, tmp_path / "resnet.pth")
    refused = cli(
        "convert",
        "--source",
        "medical-mae",
        "--checkpoint",
        str(tmp_path / "resnet.pth"),
        "--output",
        str(tmp_path / "r"),
    )
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "resnet.pth is not a ViT" in lines[0], refused.stderr
