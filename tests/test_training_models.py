"""The recipes' model builders: one source for the input resolution (`--image_size`)."""

import pytest
import torch
from model_helpers import randomize_

from cxr_vitmae import CXRDenseNetConfig, CXRViTMAEConfig, CXRViTMAEForPreTraining, DenseNetForChestXray
from cxr_vitmae.models.modeling_cxr_vitmae import resize_position_table
from cxr_vitmae.training.models import build_classifier, build_pretraining_model

LABELS = ["a", "b", "c"]
TINY = {"patch_size": 8, "num_hidden_layers": 2}


def classifier(model: str, image_size: int, overrides: dict | None = None):
    return build_classifier(
        model, label_names=LABELS, single_label=False, image_size=image_size, drop_path=0.0, overrides=overrides or {}
    )


def test_model_overrides_image_size_must_agree_with_image_size():
    # The same value twice is fine (it used to be a duplicate keyword); another one is refused before any model.
    assert classifier("vit-tiny", 32, {**TINY, "image_size": 32}).config.image_size == 32
    with pytest.raises(ValueError, match=r"image_size=48 disagrees with --image_size 32"):
        classifier("vit-tiny", 32, {**TINY, "image_size": 48})
    with pytest.raises(ValueError, match=r"image_size=48 disagrees with --image_size 32"):
        build_pretraining_model("vit-tiny", image_size=32, mask_ratio=0.9, norm_pix_loss=False,
                                overrides={**TINY, "image_size": 48})  # fmt: skip


def test_a_vit_directory_saved_at_another_size_is_resampled(tmp_path):
    config = CXRViTMAEConfig.from_preset("vit-tiny", image_size=32, **TINY)
    saved = randomize_(CXRViTMAEForPreTraining(config), std=0.2)
    saved.save_pretrained(tmp_path / "mae")

    model = classifier(str(tmp_path / "mae"), 48)
    assert model.config.image_size == 48
    expected = resize_position_table(saved.vit.embeddings.position_embeddings.detach(), 6, 6)
    assert torch.equal(model.vit.embeddings.position_embeddings.detach(), expected)
    assert model.vit.embeddings.position_embeddings.requires_grad  # trainable in fine-tuning, as before
    assert torch.equal(model.vit.layers[1].attention.qkv.weight, saved.vit.layers[1].attention.qkv.weight)
    assert model(pixel_values=torch.randn(2, 3, 48, 48)).logits.shape == (2, 3)

    mae = build_pretraining_model(str(tmp_path / "mae"), image_size=48, mask_ratio=0.9, norm_pix_loss=False,
                                  overrides={})  # fmt: skip
    assert mae.config.image_size == 48
    assert mae.decoder.decoder_pos_embed.shape[1] == 1 + 36
    assert torch.isfinite(mae(pixel_values=torch.randn(2, 3, 48, 48)).loss)
    with pytest.raises(ValueError, match="not a multiple of the model's patch size 8"):
        classifier(str(tmp_path / "mae"), 44)


def test_a_densenet_directory_records_the_new_size(tmp_path):
    DenseNetForChestXray(CXRDenseNetConfig.from_preset("densenet121", image_size=32, num_labels=3)).save_pretrained(
        tmp_path / "densenet"
    )
    model = classifier(str(tmp_path / "densenet"), 64)
    assert model.config.image_size == 64
    model.save_pretrained(tmp_path / "saved")
    assert '"height": 64' in (tmp_path / "saved" / "preprocessor_config.json").read_text()
