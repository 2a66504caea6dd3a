"""DenseNet checkpoint conversion: every layout is written from random weights exactly as its training code saves it,
converted, and compared with torchvision's or timm's own DenseNet on the same weights."""

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from model_helpers import randomize_, save_like_mae
from safetensors.torch import save_file
from torch import nn

from cxr_vitmae.hub.checkpoint_loading import load_checkpoint_file, unwrap_state_dict
from cxr_vitmae.models.chest_xray_labels import (
    CHEXPERT_COMPETITION_LABELS,
    COVIDX_LABELS,
    COVIDX_PAPER_CODE_LABELS,
    NIH_CHESTXRAY14_LABELS,
)
from cxr_vitmae.models.conversion_cxr_densenet import convert_densenet_state_dict, is_densenet_state_dict
from cxr_vitmae.models.conversion_utils import ConversionError, ConvertedCheckpoint
from cxr_vitmae.models.modeling_cxr_densenet import CXRDenseNetModel, DenseNetForChestXray

TOLERANCE = 1e-5


def build(converted: ConvertedCheckpoint) -> nn.Module:
    """What the orchestrator does with a conversion result, minus the saving."""
    model = converted.model_class(converted.config)
    missing, unexpected = model.load_state_dict(converted.state_dict, strict=not converted.fresh_prefixes)
    assert not unexpected
    assert all(key.startswith(converted.fresh_prefixes) for key in missing)
    return model.eval()


def convert_file(path: Path, **options) -> ConvertedCheckpoint:
    return convert_densenet_state_dict(unwrap_state_dict(load_checkpoint_file(path), path), **options)


def torchvision_pooled_features(model: torchvision.models.DenseNet, pixels: torch.Tensor) -> torch.Tensor:
    # torchvision.models.DenseNet.forward up to (not including) the classifier.
    return F.adaptive_avg_pool2d(F.relu(model.features(pixels)), 1).flatten(1)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def adam_state(model: nn.Module) -> dict:
    """A small but real optimizer state dict (the files carry one; its content is irrelevant to conversion)."""
    # Copies, so that the step does not change the weights the reference model is compared with.
    parameters = [p.detach().clone().requires_grad_() for p in list(model.parameters())[:2]]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    parameters[0].sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return optimizer.state_dict()


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def torchvision121() -> torchvision.models.DenseNet:
    return randomize_(torchvision.models.densenet121(weights=None, num_classes=14)).eval()


@dataclass
class Layout:
    """A checkpoint file as some training code writes it, and what it must convert to."""

    path: Path
    source: str  # the `cxr-vitmae convert --source` it belongs to
    model_class: type
    reference: Callable[[torch.Tensor], torch.Tensor]  # logits, or pooled features for a backbone


@pytest.fixture(scope="module")
def paper_finetuned(tmp_path_factory, torchvision121) -> Layout:
    # The paper's main_finetune_chestxray.py with `--model densenet121`: torchvision densenet121(num_classes=14),
    # saved by util/misc.py::save_model.
    path = tmp_path_factory.mktemp("paper-finetuned") / "checkpoint-74.pth"
    save_like_mae(
        path,
        torchvision121.state_dict(),
        optimizer=adam_state(torchvision121),
        epoch=74,
        model="densenet121",
        nb_classes=14,
        finetune="densenet121_CXR_0.3M_mae.pth",
        checkpoint_type="smp_encoder",
        batch_size=128,
        epochs=75,
        blr=2.5e-4,
        weight_decay=0.05,
        input_size=224,
        dataset="chestxray",
    )
    return Layout(path, "medical-mae", DenseNetForChestXray, torchvision121)


@pytest.fixture(scope="module")
def paper_unet_pretraining(tmp_path_factory, torchvision121) -> Layout:
    # models_mae_cnn.py keeps smp.Unet(encoder_name="densenet121") as `self.model`; smp's DenseNetEncoder is
    # torchvision's DenseNet without its classifier, so the encoder keys are `model.encoder.features.*`.
    generator = torch.Generator().manual_seed(3)
    model = {
        f"model.encoder.{key}": value
        for key, value in torchvision121.state_dict().items()
        if key.startswith("features.")
    }
    model.update(
        {
            "model.decoder.blocks.0.conv1.0.weight": torch.randn(8, 16, 3, 3, generator=generator),
            "model.decoder.blocks.0.conv1.1.weight": torch.rand(8, generator=generator),
            "model.decoder.blocks.0.conv1.1.running_mean": torch.randn(8, generator=generator),
            "model.decoder.blocks.0.conv1.1.num_batches_tracked": torch.tensor(5),
            "model.segmentation_head.0.weight": torch.randn(3, 16, 3, 3, generator=generator),
            "model.segmentation_head.0.bias": torch.randn(3, generator=generator),
        }
    )
    args = argparse.Namespace(model="unet_densenet121", mask_ratio=0.75, batch_size=256, epochs=800, blr=1.5e-4)
    path = tmp_path_factory.mktemp("paper-unet") / "densenet121_CXR_0.3M_mae.pth"
    torch.save(
        {"model": model, "optimizer": {"state": {}, "param_groups": []}, "epoch": 799, "scaler": {}, "args": args}, path
    )
    return Layout(path, "medical-mae", CXRDenseNetModel, lambda x: torchvision_pooled_features(torchvision121, x))


class CheXNetDenseNet121(nn.Module):
    """PhoenixMark0/ChestX-ray14-Classification's model: torchvision DenseNet-121 with a Linear + Sigmoid head."""

    def __init__(self, out_size: int = 14):
        super().__init__()
        self.densenet121 = torchvision.models.densenet121(weights=None)
        in_features = self.densenet121.classifier.in_features
        self.densenet121.classifier = nn.Sequential(nn.Linear(in_features, out_size), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.densenet121(x)


@pytest.fixture(scope="module")
def chexnet_model() -> CheXNetDenseNet121:
    model = CheXNetDenseNet121().eval()
    with torch.no_grad():
        # randomize_ uses one fixed seed, so shift this model's weights away from torchvision121's.
        for tensor in randomize_(model).state_dict().values():
            if tensor.is_floating_point():
                tensor.mul_(1.1)
    return model


@pytest.fixture(scope="module")
def chexnet_style(tmp_path_factory, chexnet_model) -> Layout:
    path = tmp_path_factory.mktemp("chexnet") / "densenet121_imagenet_torchvision.pth.tar"
    parallel = nn.DataParallel(chexnet_model)  # the codebase trains under DataParallel: `module.` prefixes
    optimizer = torch.optim.Adam(chexnet_model.parameters(), lr=2e-4)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=5)
    torch.save(
        {
            "epoch": 3,
            "lossMIN": np.float64(0.15),
            "state_dict": parallel.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        path,
    )

    def logits_before_sigmoid(x: torch.Tensor) -> torch.Tensor:
        captured = []
        handle = chexnet_model.densenet121.classifier[0].register_forward_hook(lambda m, i, out: captured.append(out))
        try:
            chexnet_model(x)
        finally:
            handle.remove()
        return captured[0]

    return Layout(path, "medical-mae", DenseNetForChestXray, logits_before_sigmoid)


@pytest.fixture(scope="module")
def torchvision169_legacy(tmp_path_factory) -> Layout:
    # A bare torchvision state dict whose first dense layer has the pre-0.4 names (`norm.1`, `conv.2`, ...) that
    # torchvision's own loader still renames, and no BatchNorm batch counters (added in torch 0.4.1).
    model = randomize_(torchvision.models.densenet169(weights=None, num_classes=14)).eval()
    legacy = {}
    for key, value in model.state_dict().items():
        if key.startswith("features.denseblock1.denselayer1."):
            if key.endswith("num_batches_tracked"):
                continue
            for module in ("norm1", "norm2", "conv1", "conv2"):
                key = key.replace(f".{module}.", f".{module[:-1]}.{module[-1]}.")
        legacy[key] = value
    assert "features.denseblock1.denselayer1.norm.1.running_var" in legacy
    path = tmp_path_factory.mktemp("torchvision") / "densenet169.pth"
    torch.save(legacy, path)
    return Layout(path, "torchvision-densenet", DenseNetForChestXray, model)


@pytest.fixture(scope="module")
def timm121(tmp_path_factory) -> Layout:
    model = randomize_(timm.create_model("densenet121", pretrained=False, num_classes=14)).eval()
    path = tmp_path_factory.mktemp("timm") / "model.safetensors"
    save_file(model.state_dict(), path)
    return Layout(path, "timm", DenseNetForChestXray, model)


LAYOUTS = ["paper_finetuned", "paper_unet_pretraining", "chexnet_style", "torchvision169_legacy", "timm121"]


# --- conversion function ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("layout_name", LAYOUTS)
def test_layout_converts_to_the_reference_network(layout_name, request, pixels):
    layout: Layout = request.getfixturevalue(layout_name)
    converted = convert_file(layout.path)
    assert converted.model_class is layout.model_class
    model = build(converted)
    with torch.no_grad():
        expected = layout.reference(pixels)
        outputs = model(pixels)
    actual = outputs.logits if layout.model_class is DenseNetForChestXray else outputs.pooler_output
    assert max_diff(actual, expected) <= TOLERANCE


def test_paper_finetuned_gets_nih_labels_and_multilabel_loss(paper_finetuned):
    config = convert_file(paper_finetuned.path).config
    assert tuple(config.id2label.values()) == NIH_CHESTXRAY14_LABELS
    assert config.label2id["Hernia"] == 13
    assert config.problem_type == "multi_label_classification"
    assert tuple(config.block_config) == (6, 12, 24, 16)


@pytest.mark.slow
def test_unet_pretraining_is_a_backbone_without_the_decoder(paper_unet_pretraining, torchvision121, pixels):
    converted = convert_file(paper_unet_pretraining.path, labels="chexpert")  # labels mean nothing without a head
    assert set(converted.state_dict) == set(CXRDenseNetModel(converted.config).state_dict())
    assert any("dropped 6 U-Net decoder tensors" in note for note in converted.notes)
    assert any("--labels chexpert was not used" in note for note in converted.notes)
    with torch.no_grad():
        feature_map = build(converted)(pixels).last_hidden_state
    assert max_diff(feature_map, F.relu(torchvision121.features(pixels))) <= TOLERANCE


def test_chexnet_style_matches_the_sigmoid_outputs_too(chexnet_style, chexnet_model, pixels):
    model = build(convert_file(chexnet_style.path))
    with torch.no_grad():
        assert max_diff(torch.sigmoid(model(pixels).logits), chexnet_model(pixels)) <= TOLERANCE


def test_densenet169_is_inferred_from_the_shapes(torchvision169_legacy):
    converted = convert_file(torchvision169_legacy.path)
    assert tuple(converted.config.block_config) == (6, 12, 32, 32)
    assert "densenet.features.denseblock1.denselayer1.norm1.running_var" in converted.state_dict
    assert converted.state_dict["densenet.features.denseblock1.denselayer1.norm1.num_batches_tracked"] == 0
    assert any("renamed 10 pre-0.4 torchvision" in note for note in converted.notes)


def test_explicit_matching_preset_is_accepted(torchvision121):
    converted = convert_densenet_state_dict(torchvision121.state_dict(), preset="densenet121")
    assert tuple(converted.config.block_config) == (6, 12, 24, 16)


@pytest.mark.parametrize("prefix", ["timm_model.", "module.module.", "densenet.", "module.densenet121."])
def test_wrapper_prefixes_are_removed(prefix, torchvision121):
    state_dict = torchvision121.state_dict()
    plain = convert_densenet_state_dict(state_dict).state_dict
    wrapped = convert_densenet_state_dict({prefix + k: v for k, v in state_dict.items()}).state_dict
    assert wrapped.keys() == plain.keys()
    assert all(wrapped[key] is plain[key] for key in plain)


def test_features_only_state_dict_gives_the_backbone(torchvision121):
    features = {k: v for k, v in torchvision121.state_dict().items() if k.startswith("features.")}
    converted = convert_densenet_state_dict(features)
    assert converted.model_class is CXRDenseNetModel
    assert all(key.startswith("features.") for key in converted.state_dict)
    build(converted)


def test_single_channel_stem_sets_num_channels(torchvision121):
    state_dict = dict(torchvision121.state_dict())
    state_dict["features.conv0.weight"] = state_dict["features.conv0.weight"].sum(dim=1, keepdim=True)
    converted = convert_densenet_state_dict(state_dict)
    assert converted.config.num_channels == 1
    build(converted)


# --- heads and labels ---------------------------------------------------------------------------------------------


def with_head(torchvision121, num_outputs: int, name: str = "classifier") -> dict[str, torch.Tensor]:
    state_dict = {k: v for k, v in torchvision121.state_dict().items() if k.startswith("features.")}
    state_dict[f"{name}.weight"] = torch.randn(num_outputs, 1024) * 0.05
    state_dict[f"{name}.bias"] = torch.randn(num_outputs) * 0.05
    return state_dict


@pytest.mark.parametrize(
    ("num_outputs", "labels", "names", "problem_type"),
    [
        (5, None, CHEXPERT_COMPETITION_LABELS, "multi_label_classification"),
        (3, None, COVIDX_LABELS, "single_label_classification"),
        (4, "covidx", COVIDX_PAPER_CODE_LABELS, "single_label_classification"),
        (14, "nih", NIH_CHESTXRAY14_LABELS, "multi_label_classification"),
    ],
)
def test_head_size_and_labels_choose_the_label_set(torchvision121, num_outputs, labels, names, problem_type):
    converted = convert_densenet_state_dict(with_head(torchvision121, num_outputs), labels=labels)
    assert converted.model_class is DenseNetForChestXray
    assert tuple(converted.config.id2label.values()) == names
    assert converted.config.problem_type == problem_type
    assert build(converted).classifier.out_features == num_outputs


def test_labels_contradicting_the_head_size_raise(torchvision121):
    with pytest.raises(ConversionError, match="nih has 14 classes but the checkpoint's head has 5 outputs"):
        convert_densenet_state_dict(with_head(torchvision121, 5), labels="nih")


@pytest.mark.slow
@pytest.mark.parametrize(("labels", "num_labels"), [(None, 14), ("chexpert", 5)])
def test_imagenet_head_is_replaced_by_a_new_chest_xray_head(labels, num_labels, torchvision121, pixels):
    converted = convert_densenet_state_dict(with_head(torchvision121, 1000), labels=labels)
    assert converted.model_class is DenseNetForChestXray
    assert converted.fresh_prefixes == ("classifier.",)
    assert not any(key.startswith("classifier.") for key in converted.state_dict)
    assert converted.config.num_labels == num_labels
    assert any("1000-class ImageNet head" in note for note in converted.notes)
    model = build(converted)
    with torch.no_grad():
        pooled = model.densenet(pixels).pooler_output
    assert max_diff(pooled, torchvision_pooled_features(torchvision121, pixels)) <= TOLERANCE


def test_two_heads_landing_on_one_name_raise(torchvision121):
    state_dict = with_head(torchvision121, 14)
    state_dict["classifier.0.weight"] = state_dict["classifier.weight"].clone()
    with pytest.raises(ConversionError, match=r"classifier\.weight <- classifier\.weight, classifier\.0\.weight"):
        convert_densenet_state_dict(state_dict)


# --- refusals -----------------------------------------------------------------------------------------------------


def test_resnet_state_dict_is_not_a_densenet():
    state_dict = torchvision.models.resnet18(weights=None).state_dict()
    assert not is_densenet_state_dict(state_dict)
    with pytest.raises(ConversionError, match=r"not a DenseNet checkpoint: expected features\.conv0\.weight.*conv1"):
        convert_densenet_state_dict(state_dict)


def test_preset_contradicting_the_shapes_raises(torchvision121):
    with pytest.raises(ConversionError, match=r"densenet169 expects block_config \(6, 12, 32, 32\).*\(6, 12, 24, 16\)"):
        convert_densenet_state_dict(torchvision121.state_dict(), preset="densenet169")


def test_unknown_preset_raises(torchvision121):
    with pytest.raises(ConversionError, match="Unknown DenseNet preset 'densenet161'"):
        convert_densenet_state_dict(torchvision121.state_dict(), preset="densenet161")


def test_block_config_of_no_preset_raises(torchvision121):
    state_dict = {k: v for k, v in torchvision121.state_dict().items() if "denseblock4.denselayer16." not in k}
    with pytest.raises(ConversionError, match=r"\(6, 12, 24, 15\).*matches none of the supported presets"):
        convert_densenet_state_dict(state_dict)


def test_foreign_keys_are_kept_for_the_strict_load_to_report(torchvision121):
    state_dict = dict(torchvision121.state_dict())
    state_dict["fc.weight"] = torch.zeros(3)
    state_dict["decoder.blocks.0.weight"] = torch.zeros(3)  # not a U-Net file, so not a known decoder key
    converted = convert_densenet_state_dict(state_dict)
    assert {"fc.weight", "decoder.blocks.0.weight"} <= set(converted.state_dict)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        build(converted)


def test_is_densenet_state_dict_routes_the_layouts(torchvision121):
    features = {k: v for k, v in torchvision121.state_dict().items() if k.startswith("features.")}
    for prefix in ("", "model.encoder.", "encoder.", "densenet121.", "timm_model."):
        assert is_densenet_state_dict({prefix + k: v for k, v in features.items()})
    vit_mae = {"cls_token": torch.zeros(1), "pos_embed": torch.zeros(1), "blocks.0.attn.qkv.weight": torch.zeros(1)}
    assert not is_densenet_state_dict(vit_mae)


# --- end to end through the orchestrator (cxr_vitmae.hub.convert) ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("layout_name", LAYOUTS)
def test_convert_checkpoint_writes_a_loadable_model(layout_name, request, pixels, tmp_path):
    from transformers import AutoModel, AutoModelForImageClassification

    from cxr_vitmae.hub.convert import convert_checkpoint

    layout: Layout = request.getfixturevalue(layout_name)
    convert_checkpoint(layout.source, layout.path, tmp_path)
    auto_class = AutoModelForImageClassification if layout.model_class is DenseNetForChestXray else AutoModel
    model = auto_class.from_pretrained(tmp_path).eval()
    assert type(model) is layout.model_class
    with torch.no_grad():
        expected = layout.reference(pixels)
        outputs = model(pixels)
    actual = outputs.logits if layout.model_class is DenseNetForChestXray else outputs.pooler_output
    assert max_diff(actual, expected) <= TOLERANCE


@pytest.mark.slow
def test_convert_checkpoint_gives_an_imagenet_densenet_a_new_head(torchvision121, pixels, tmp_path):
    from transformers import AutoModelForImageClassification

    from cxr_vitmae.hub.convert import convert_checkpoint

    path = tmp_path / "densenet121-imagenet.pth"
    torch.save(with_head(torchvision121, 1000), path)
    convert_checkpoint("torchvision-densenet", path, tmp_path / "out")
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out").eval()
    assert tuple(model.config.id2label.values()) == NIH_CHESTXRAY14_LABELS
    with torch.no_grad():
        pooled = model.densenet(pixels).pooler_output
    assert max_diff(pooled, torchvision_pooled_features(torchvision121, pixels)) <= TOLERANCE


def test_convert_checkpoint_passes_preset_and_labels_through(torchvision121, tmp_path):
    from transformers import AutoConfig

    from cxr_vitmae.hub.convert import convert_checkpoint

    path = tmp_path / "covidx.pth"
    torch.save(with_head(torchvision121, 3), path)
    with pytest.raises(ConversionError, match=r"densenet201 expects block_config"):
        convert_checkpoint("torchvision-densenet", path, tmp_path / "wrong-preset", preset="densenet201")
    convert_checkpoint("torchvision-densenet", path, tmp_path / "out", preset="densenet121", labels="covidx")
    config = AutoConfig.from_pretrained(tmp_path / "out")
    assert tuple(config.id2label.values()) == COVIDX_LABELS
    assert config.problem_type == "single_label_classification"


def test_convert_checkpoint_lists_foreign_keys(torchvision121, tmp_path):
    from cxr_vitmae.hub.convert import convert_checkpoint

    path = tmp_path / "extra.pth"
    torch.save({**torchvision121.state_dict(), "fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ConversionError, match=r"unknown keys: fc\.weight"):
        convert_checkpoint("torchvision-densenet", path, tmp_path / "out")
