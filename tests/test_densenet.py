"""DenseNet baseline: architecture parity with torchvision/timm, losses, config validation and save/load."""

import json
import math

import pytest
import timm
import torch
import torchvision
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from model_helpers import run_python, set_checkpointing

from cxr_vitmae.models.chest_xray_labels import NIH_CHESTXRAY14_LABELS
from cxr_vitmae.models.configuration_cxr_densenet import CXRDenseNetConfig
from cxr_vitmae.models.modeling_cxr_densenet import CXRDenseNetModel, DenseNetForChestXray

DENSENET121_BACKBONE_PARAMS = 6_953_856  # torchvision densenet121 without its 1000-class head


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_config(**overrides) -> CXRDenseNetConfig:
    return CXRDenseNetConfig(**{"growth_rate": 8, "block_config": (2, 2), **overrides})


def randomise_(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics, and every bias a value, so an
    equivalence check cannot pass by accident of the default init (weight 1, bias 0, mean 0, var 1)."""
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
                module.bias.copy_(torch.rand(module.bias.shape, generator=gen) - 0.5)
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=gen) - 0.5)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
                module.num_batches_tracked.fill_(7)
            elif isinstance(module, torch.nn.Linear):
                module.bias.copy_(torch.rand(module.bias.shape, generator=gen) - 0.5)
    return model.eval()


def to_cxr_state_dict(reference_state_dict: dict) -> dict:
    """torchvision/timm names -> DenseNetForChestXray names: only the backbone gains the `densenet.` prefix."""
    mapped = {}
    for key, value in reference_state_dict.items():
        if key.startswith("features."):
            mapped["densenet." + key] = value
        elif key.startswith("classifier."):
            mapped[key] = value
        else:
            raise AssertionError(f"unexpected key in reference checkpoint: {key}")
    return mapped


@pytest.fixture(scope="module")
def torchvision_densenet121():
    torch.manual_seed(0)
    return randomise_(torchvision.models.densenet121(weights=None, num_classes=14))


@pytest.fixture(scope="module")
def cxr_from_torchvision(torchvision_densenet121):
    model = DenseNetForChestXray(CXRDenseNetConfig.from_preset("densenet121"))
    model.load_state_dict(to_cxr_state_dict(torchvision_densenet121.state_dict()), strict=True)
    return model.eval()


# --- architecture -------------------------------------------------------------------------------------------------


def test_densenet121_backbone_parameter_count():
    backbone = CXRDenseNetModel(CXRDenseNetConfig.from_preset("densenet121"))
    reference = torchvision.models.densenet121(weights=None)
    reference_backbone = n_params(reference) - n_params(reference.classifier)
    assert n_params(backbone) == reference_backbone
    assert n_params(backbone) == pytest.approx(DENSENET121_BACKBONE_PARAMS, rel=0.005)
    assert backbone.num_features == 1024


@pytest.mark.parametrize(
    ("preset", "factory", "blocks"),
    [
        ("densenet169", torchvision.models.densenet169, [6, 12, 32, 32]),
        ("densenet201", torchvision.models.densenet201, [6, 12, 48, 32]),
    ],
)
def test_larger_presets_match_torchvision(preset, factory, blocks):
    config = CXRDenseNetConfig.from_preset(preset)
    assert list(config.block_config) == blocks
    assert (config.growth_rate, config.num_init_features) == (32, 64)
    ours = CXRDenseNetModel(config)
    reference = factory(weights=None).features
    assert n_params(ours) == n_params(reference)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        "features." + k: v.shape for k, v in reference.state_dict().items()
    }


def test_drop_rate_is_torchvision_per_layer_dropout():
    model = CXRDenseNetModel(tiny_config(drop_rate=0.3))
    layers = [m for name, m in model.named_modules() if name.split(".")[-1].startswith("denselayer")]
    assert len(layers) == 4
    assert all(layer.drop_rate == 0.3 for layer in layers)


def test_hidden_states_and_pooling():
    model = CXRDenseNetModel(tiny_config()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    # stem (64 px / 4) then the two dense blocks (the second after one transition halves the size).
    assert [tuple(h.shape) for h in out.hidden_states] == [(2, 16, 16, 16), (2, 32, 16, 16), (2, 32, 8, 8)]
    assert out.last_hidden_state.shape == (2, model.num_features, 8, 8)
    assert (out.last_hidden_state >= 0).all()  # norm5 carries torchvision's final ReLU
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state.mean(dim=(2, 3)))
    with torch.no_grad():
        assert model(x).hidden_states is None
        as_tuple = model(x, return_dict=False)
    torch.testing.assert_close(as_tuple[1], out.pooler_output)


# --- exactness against torchvision and timm -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("size", [224, 64])
def test_logits_match_torchvision(torchvision_densenet121, cxr_from_torchvision, size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        expected = torchvision_densenet121(x)
        actual = cxr_from_torchvision(x).logits
    assert actual.shape == (2, 14)
    assert (actual - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("size", [224, 64])
def test_logits_match_timm(size):
    torch.manual_seed(1)
    reference = randomise_(timm.create_model("densenet121", num_classes=14))
    model = DenseNetForChestXray(CXRDenseNetConfig.from_preset("densenet121"))
    model.load_state_dict(to_cxr_state_dict(reference.state_dict()), strict=True)
    model.eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        assert (model(x).logits - reference(x)).abs().max().item() <= 1e-5


# --- initialisation --------------------------------------------------------------------------------------------------


def test_fresh_weights_follow_torchvision_init():
    model = DenseNetForChestXray(tiny_config())
    norm = model.densenet.features.norm0
    assert torch.equal(norm.weight, torch.ones_like(norm.weight))
    assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
    assert torch.equal(model.classifier.bias, torch.zeros_like(model.classifier.bias))
    conv = model.densenet.features.conv0.weight  # kaiming normal: fan_in, a=0, so std = sqrt(2 / fan_in)
    expected_std = math.sqrt(2.0 / conv[0].numel())
    assert conv.std().item() == pytest.approx(expected_std, rel=0.15)


# --- losses ------------------------------------------------------------------------------------------------------


def test_multi_label_loss_masks_nan_targets():
    torch.manual_seed(0)
    model = DenseNetForChestXray(tiny_config()).eval()
    assert model.config.problem_type == "multi_label_classification"
    labels = torch.zeros(2, 14)
    labels[0, :3] = 1.0
    labels[1, 5] = 1.0
    labels[0, 4] = float("nan")
    labels[1, 10:] = float("nan")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x, labels=labels)
    total, count = 0.0, 0
    for z, y in zip(out.logits.flatten().tolist(), labels.flatten().tolist(), strict=True):
        if math.isnan(y):
            continue
        p = 1.0 / (1.0 + math.exp(-z))
        total += -(y * math.log(p) + (1 - y) * math.log(1 - p))
        count += 1
    assert count == 28 - 5
    assert out.loss.item() == pytest.approx(total / count, rel=1e-5)


def test_single_label_loss_is_cross_entropy():
    config = tiny_config(problem_type="single_label_classification", id2label={0: "normal", 1: "pneumonia", 2: "covid"})
    model = DenseNetForChestXray(config).eval()
    labels = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32), labels=labels)
    assert out.logits.shape == (3, 3)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


# --- gradient checkpointing ----------------------------------------------------------------------------------------


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = DenseNetForChestXray(tiny_config())
    model.train()
    x = torch.randn(2, 3, 32, 32)
    labels = torch.rand(2, 14).round()

    def grads():
        model.zero_grad()
        torch.manual_seed(0)
        model(x, labels=labels).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    set_checkpointing(model, True)
    checkpointed = grads()
    set_checkpointing(model, False)
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b)


# --- config ------------------------------------------------------------------------------------------------------


def test_config_defaults_are_densenet121_with_nih_labels():
    config = CXRDenseNetConfig()
    assert (config.growth_rate, list(config.block_config), config.num_init_features, config.bn_size) == (
        32,
        [6, 12, 24, 16],
        64,
        4,
    )
    assert config.num_labels == 14
    assert [config.id2label[i] for i in range(14)] == list(NIH_CHESTXRAY14_LABELS)
    assert all(config.id2label[idx] == name for name, idx in config.label2id.items())
    assert CXRDenseNetConfig(num_labels=3).num_labels == 3
    assert CXRDenseNetConfig(id2label={0: "a", 1: "b"}).label2id == {"a": 0, "b": 1}
    assert CXRDenseNetConfig.from_preset("densenet121", drop_rate=0.2).drop_rate == 0.2


def test_unknown_preset_raises_with_valid_names():
    with pytest.raises(ValueError, match="densenet121.*densenet169.*densenet201"):
        CXRDenseNetConfig.from_preset("densenet161")


@pytest.mark.parametrize(
    "bad",
    [{"growth_rate": 0}, {"block_config": ()}, {"block_config": (6, 0)}, {"drop_rate": 1.0}, {"num_init_features": 48}],
)
def test_strict_validation_rejects_bad_values(bad):
    with pytest.raises(StrictDataclassClassValidationError):
        CXRDenseNetConfig(**bad)


def test_strict_validation_rejects_wrong_types():
    with pytest.raises(StrictDataclassFieldValidationError):
        CXRDenseNetConfig(growth_rate="32")


# --- save / load ---------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path, cxr_from_torchvision):
    save_dir = tmp_path / "densenet121"
    cxr_from_torchvision.save_pretrained(save_dir)

    config_json = json.loads((save_dir / "config.json").read_text())
    assert config_json["model_type"] == "cxr_densenet"
    assert config_json["auto_map"] == {
        "AutoConfig": "configuration_cxr_densenet.CXRDenseNetConfig",
        "AutoModel": "modeling_cxr_densenet.CXRDenseNetModel",
        "AutoModelForImageClassification": "modeling_cxr_densenet.DenseNetForChestXray",
    }
    assert config_json["problem_type"] == "multi_label_classification"
    for name in (
        "modeling_cxr_densenet.py",
        "configuration_cxr_densenet.py",
        "chest_xray_labels.py",
        "classification_loss.py",
        "model.safetensors",
    ):
        assert (save_dir / name).is_file(), name

    # The BN running statistics are random, so equal logits also prove loading did not re-initialise buffers.
    reloaded = DenseNetForChestXray.from_pretrained(save_dir).eval()
    assert list(reloaded.config.block_config) == [6, 12, 24, 16]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, cxr_from_torchvision(x).logits)
        backbone = CXRDenseNetModel.from_pretrained(save_dir).eval()
        torch.testing.assert_close(backbone(x).pooler_output, cxr_from_torchvision.densenet(x).pooler_output)


@pytest.mark.slow
def test_saved_directory_loads_as_remote_code_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = randomise_(DenseNetForChestXray(tiny_config()))
    save_dir = tmp_path / "tiny"
    model.save_pretrained(save_dir)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(x).logits, tmp_path / "expected.pt")

    run_python(
        """
        import sys, torch
        from transformers import AutoModel, AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        backbone = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
        assert type(backbone).__name__ == "CXRDenseNetModel", type(backbone)
        assert "cxr_vitmae" not in sys.modules
        with torch.no_grad():
            logits = model(torch.load(sys.argv[2])).logits
        # not bit-exact: another process may pick other CPU kernels / thread splits
        torch.testing.assert_close(logits, torch.load(sys.argv[3]), rtol=0, atol=1e-5)
        """,
        tmp_path,
        str(save_dir),
        str(tmp_path / "x.pt"),
        str(tmp_path / "expected.pt"),
    )
