"""CXRViTMAE models against independent references: sizes, classifier logits, MAE masking and loss, loading paths."""

import json
from pathlib import Path

import pytest
import torch
from model_helpers import randomize_, run_without_package, set_checkpointing
from reference_vit import mae_forward, patchify, vit_classifier_logits
from transformers import AutoImageProcessor, AutoModelForImageClassification, AutoModelForPreTraining, pipeline

import cxr_vitmae
from cxr_vitmae import (
    NIH_CHESTXRAY14_LABELS,
    CXRImageProcessor,
    CXRViTMAEConfig,
    CXRViTMAEForPreTraining,
    CXRViTMAEModel,
    ViTMAEForChestXray,
)
from cxr_vitmae.models import vit_building_blocks

TINY = {"image_size": 64, "patch_size": 16, "num_hidden_layers": 3}


def tiny_config(**overrides) -> CXRViTMAEConfig:
    return CXRViTMAEConfig.from_preset("vit-tiny", **{**TINY, **overrides})


# Our parameter names -> the timm / facebookresearch-mae names the reference reads: a key's first matching prefix is
# swapped, then the names inside a block.
TIMM_PREFIXES = {
    "vit.embeddings.cls_token": "cls_token",
    "vit.embeddings.position_embeddings": "pos_embed",
    "vit.embeddings.patch_embeddings.projection.": "patch_embed.proj.",
    "vit.layers.": "blocks.",
    "vit.layernorm.": "norm.",
    "decoder.decoder_layers.": "decoder_blocks.",
    "decoder.": "",  # decoder_embed, decoder_pos_embed, decoder_norm, decoder_pred, mask_token
    "classifier.": "head.",
}
TIMM_BLOCK_NAMES = {
    ".layernorm_before.": ".norm1.",
    ".layernorm_after.": ".norm2.",
    ".attention.qkv.": ".attn.qkv.",
    ".attention.o_proj.": ".attn.proj.",
}


def to_timm_layout(state_dict: dict) -> dict:
    mapped = {}
    for key, value in state_dict.items():
        prefix = next((prefix for prefix in TIMM_PREFIXES if key.startswith(prefix)), None)
        if prefix is not None:
            key = TIMM_PREFIXES[prefix] + key.removeprefix(prefix)
        for ours, theirs in TIMM_BLOCK_NAMES.items():
            key = key.replace(ours, theirs)
        mapped[key] = value
    return mapped


def block_params(dim: int, mlp: int) -> int:
    # qkv + proj + fc1 + fc2 (weights and biases) + two LayerNorms
    return (3 * dim * dim + 3 * dim) + (dim * dim + dim) + (dim * mlp + mlp) + (mlp * dim + dim) + 4 * dim


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("preset", "reference_millions"), [("vit-small", 21.67), ("vit-base", 85.80)])
def test_encoder_parameter_count_matches_reference(preset, reference_millions):
    encoder = CXRViTMAEModel(CXRViTMAEConfig.from_preset(preset))
    assert count(encoder) / 1e6 == pytest.approx(reference_millions, rel=0.005)


@pytest.mark.parametrize(("preset", "decoder_depth"), [("vit-small", 2), ("vit-base", 8)])
def test_decoder_has_the_papers_size(preset, decoder_depth):
    config = CXRViTMAEConfig.from_preset(preset)
    model = CXRViTMAEForPreTraining(config)
    dim, width, tokens = config.hidden_size, 512, 197
    expected = (
        dim * width
        + width  # decoder_embed
        + width  # mask_token
        + tokens * width  # fixed sin-cos table
        + decoder_depth * block_params(width, 2048)
        + 2 * width  # decoder_norm
        + width * 16 * 16 * 3
        + 16 * 16 * 3  # decoder_pred
    )
    assert (config.decoder_hidden_size, config.decoder_num_hidden_layers) == (512, decoder_depth)
    assert config.decoder_num_attention_heads == 16
    assert count(model.decoder) == expected


def test_paper_defaults():
    config = CXRViTMAEConfig()
    assert (config.patch_size, config.image_size, config.layer_norm_eps, config.qkv_bias) == (16, 224, 1e-6, True)
    assert config.mask_ratio == 0.9 and config.norm_pix_loss is False
    assert config.problem_type == "multi_label_classification"
    assert [config.id2label[i] for i in range(14)] == list(NIH_CHESTXRAY14_LABELS)
    with pytest.raises(ValueError, match="Unknown ViT preset"):
        CXRViTMAEConfig.from_preset("vit-huge")
    with pytest.raises(Exception, match="divisible"):
        CXRViTMAEConfig(hidden_size=100, num_attention_heads=3)


@pytest.mark.parametrize("num_labels", [2, 3])
def test_label_maps_survive_save_and_load(tmp_path, num_labels):
    config = CXRViTMAEConfig(num_labels=num_labels)
    assert config.label2id == {f"LABEL_{i}": i for i in range(num_labels)}
    config.save_pretrained(tmp_path)
    assert CXRViTMAEConfig.from_pretrained(tmp_path).id2label == config.id2label


def test_label_maps_given_to_from_pretrained_stay_consistent(tmp_path):
    # The contract's fine-tuning call: the inverse map must follow the labels set after construction.
    CXRViTMAEForPreTraining(tiny_config()).save_pretrained(tmp_path / "mae")
    names = {0: "Effusion", 1: "Nodule", 2: "Mass"}
    model = ViTMAEForChestXray.from_pretrained(tmp_path / "mae", num_labels=3, id2label=names)
    assert model.config.label2id == {"Effusion": 0, "Nodule": 1, "Mass": 2}
    model.save_pretrained(tmp_path / "classifier")
    saved = json.loads((tmp_path / "classifier" / "config.json").read_text())
    assert saved["label2id"] == {"Effusion": 0, "Nodule": 1, "Mass": 2}


def test_position_table_is_mae_sincos_and_fixed():
    model = CXRViTMAEForPreTraining(tiny_config())
    table = model.vit.embeddings.position_embeddings[0]
    assert not model.vit.embeddings.position_embeddings.requires_grad
    dim, grid = table.shape[1], 4
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    # MAE's layout: the first half encodes the column (w), the second the row (h); CLS row is zero.
    row, col = 2, 3
    w_part = torch.cat([torch.sin(col * omega), torch.cos(col * omega)])
    h_part = torch.cat([torch.sin(row * omega), torch.cos(row * omega)])
    expected = torch.cat([w_part, h_part]).float()
    torch.testing.assert_close(table[1 + row * grid + col], expected)
    assert torch.count_nonzero(table[0]) == 0
    assert ViTMAEForChestXray(tiny_config()).vit.embeddings.position_embeddings.requires_grad


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_classifier_logits_equal_plain_torch_reference(attn_implementation):
    config = tiny_config(attn_implementation=attn_implementation)
    model = randomize_(ViTMAEForChestXray(config)).eval()
    pixels = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ours = model(pixels).logits
    reference = vit_classifier_logits(
        to_timm_layout(model.state_dict()), pixels, patch_size=16, depth=3, num_heads=config.num_attention_heads
    )
    assert ours.shape == (3, 14)
    assert (ours - reference).abs().max().item() <= 1e-5


def test_mae_forward_and_loss_equal_reference_with_fixed_noise():
    config = tiny_config()
    model = randomize_(CXRViTMAEForPreTraining(config)).eval()
    pixels = torch.randn(2, 3, 64, 64)
    noise = torch.rand(2, 16)
    with torch.no_grad():
        out = model(pixels, noise=noise)
    loss, pred, mask = mae_forward(
        to_timm_layout(model.state_dict()),
        pixels,
        noise,
        patch_size=16,
        mask_ratio=0.9,
        depth=3,
        num_heads=config.num_attention_heads,
        decoder_depth=config.decoder_num_hidden_layers,
        decoder_heads=config.decoder_num_attention_heads,
    )
    assert out.logits.shape == (2, 16, 16 * 16 * 3)
    assert (out.logits - pred).abs().max().item() <= 1e-5
    assert torch.equal(out.mask, mask)
    assert abs(out.loss.item() - loss.item()) <= 1e-5


def test_mae_loss_by_hand():
    """Loss = mean over masked patches of the per-patch MSE, target patchified as (h, w, p, q, c)."""
    model = CXRViTMAEForPreTraining(tiny_config()).eval()
    pixels = torch.randn(2, 3, 64, 64)
    noise = torch.rand(2, 16)
    with torch.no_grad():
        out = model(pixels, noise=noise)
    # int(16 * 0.1) = 1 kept patch: the one with the lowest noise; the others are masked.
    expected_mask = torch.ones(2, 16)
    expected_mask[torch.arange(2), noise.argmin(dim=1)] = 0
    assert torch.equal(out.mask, expected_mask)
    assert torch.equal(torch.argsort(torch.argsort(noise, dim=1), dim=1), out.ids_restore)

    target = patchify(pixels, 16)
    assert torch.equal(model.patchify(pixels), target)
    assert torch.equal(model.unpatchify(target), pixels)
    masked_errors = [
        ((out.logits[b, i] - target[b, i]) ** 2).mean() for b in range(2) for i in range(16) if expected_mask[b, i]
    ]
    assert out.loss.item() == pytest.approx(torch.stack(masked_errors).mean().item(), abs=1e-6)

    model.config.norm_pix_loss = True
    with torch.no_grad():
        normed = model(pixels, noise=noise)
    normed_target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    per_patch = ((normed.logits - normed_target) ** 2).mean(-1)
    assert normed.loss.item() == pytest.approx(
        ((per_patch * expected_mask).sum() / expected_mask.sum()).item(), abs=1e-6
    )


def test_encoder_does_not_mask_unless_asked():
    model = CXRViTMAEModel(tiny_config()).eval()
    pixels = torch.randn(2, 3, 64, 64)
    full = model(pixels)
    assert full.last_hidden_state.shape == (2, 17, 192) and full.mask is None
    masked = model(pixels, mask_ratio=0.75)
    assert masked.last_hidden_state.shape == (2, 5, 192) and masked.mask.sum(1).tolist() == [12, 12]


def test_multilabel_loss_masks_nan_targets_and_single_label_uses_ce():
    model = ViTMAEForChestXray(tiny_config(num_labels=3)).eval()
    pixels = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([[1.0, float("nan"), 0.0], [float("nan"), 1.0, 1.0]])
    out = model(pixels, labels=labels)
    known = ~labels.isnan()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits[known], labels[known])
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(expected.item(), abs=1e-6)

    model.config.problem_type = "single_label_classification"
    out = model(pixels, labels=torch.tensor([2, 0]))
    assert out.loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(out.logits, torch.tensor([2, 0])).item(), abs=1e-6
    )


def test_drop_path_is_active_only_in_training():
    model = ViTMAEForChestXray(tiny_config(drop_path_rate=0.5)).train()
    pixels = torch.randn(4, 3, 64, 64)
    assert not torch.equal(model(pixels).logits, model(pixels).logits)
    model.eval()
    assert torch.equal(model(pixels).logits, model(pixels).logits)


def test_interpolate_pos_encoding_runs_at_another_resolution():
    model = ViTMAEForChestXray(tiny_config()).eval()
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        model(torch.randn(1, 3, 96, 96))
    assert model(torch.randn(1, 3, 96, 96), interpolate_pos_encoding=True).logits.shape == (1, 14)
    # At the native size interpolation is the identity.
    pixels = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(pixels).logits, model(pixels, interpolate_pos_encoding=True).logits)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = randomize_(ViTMAEForChestXray(tiny_config())).train()
    pixels, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 2, (2, 14)).float()
    model(pixels, labels=labels).loss.backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    set_checkpointing(model, True)
    model(pixels, labels=labels).loss.backward()
    for reference, checkpointed in zip(plain, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(checkpointed, reference)


def save_classifier(path, **config_overrides):
    model = randomize_(ViTMAEForChestXray(tiny_config(**config_overrides))).eval()
    model.save_pretrained(path)
    return model


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    model = save_classifier(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is ViTMAEForChestXray
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, loaded(pixels).logits)
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in saved and "modeling_cxr_vitmae.py" in saved and "image_processing_cxr.py" in saved
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_cxr_vitmae.ViTMAEForChestXray"
    assert config["auto_map"]["AutoConfig"] == "configuration_cxr_vitmae.CXRViTMAEConfig"


def test_save_pretrained_writes_a_matching_image_processor_unless_one_is_there(tmp_path):
    save_classifier(tmp_path / "auto")
    processor = AutoImageProcessor.from_pretrained(tmp_path / "auto")
    assert type(processor) is CXRImageProcessor
    assert processor.crop_size == {"height": 64, "width": 64} and processor.size == {"shortest_edge": 73}
    assert list(processor.image_mean) == [0.5056] * 3 and list(processor.image_std) == [0.252] * 3

    custom = CXRImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    custom.save_pretrained(tmp_path / "custom")
    save_classifier(tmp_path / "custom")
    assert AutoImageProcessor.from_pretrained(tmp_path / "custom").size == {"shortest_edge": 64}


@pytest.mark.slow
def test_remote_code_and_pipeline_work_without_the_package(tmp_path):
    model_dir = tmp_path / "model"
    model = save_classifier(model_dir)
    pixels = torch.randn(1, 3, 64, 64)
    torch.save(pixels, tmp_path / "pixels.pt")
    from PIL import Image

    Image.effect_noise((80, 80), 40).save(tmp_path / "xray.png")

    stdout = run_without_package(
        f"""
        import json, torch
        from transformers import AutoModelForImageClassification, pipeline
        model = AutoModelForImageClassification.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            logits = model(torch.load({str(tmp_path / "pixels.pt")!r})).logits
        classify = pipeline("image-classification", model={str(model_dir)!r}, trust_remote_code=True)
        scores = classify({str(tmp_path / "xray.png")!r}, top_k=14)
        print(json.dumps({{"module": type(model).__module__, "logits": logits.tolist(), "scores": scores}}))
        """,
        tmp_path,
    )
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules")
    with torch.no_grad():
        expected = model(pixels).logits
    assert (torch.tensor(result["logits"]) - expected).abs().max().item() <= 1e-6

    processor = CXRImageProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        logits = model(**processor(str(tmp_path / "xray.png"), return_tensors="pt")).logits[0]
    scores = {entry["label"]: entry["score"] for entry in result["scores"]}
    assert set(scores) == set(NIH_CHESTXRAY14_LABELS)
    probabilities = torch.sigmoid(logits)
    for index, label in model.config.id2label.items():
        assert scores[label] == pytest.approx(probabilities[index].item(), abs=1e-5)
    assert sum(scores.values()) != pytest.approx(1.0, abs=1e-3)  # sigmoid, not softmax


@pytest.mark.slow
def test_a_pretraining_directory_loads_through_every_auto_class_without_the_package(tmp_path):
    # CONTRACT: AutoModel and AutoModelForImageClassification (fine-tuning from it) as well as AutoModelForPreTraining;
    # transformers itself writes only the saved class's entry into auto_map.
    pretraining = randomize_(CXRViTMAEForPreTraining(tiny_config())).eval()
    pretraining.save_pretrained(tmp_path / "mae")
    stdout = run_without_package(
        f"""
        import json
        from transformers import AutoModel, AutoModelForImageClassification, AutoModelForPreTraining
        directory = {str(tmp_path / "mae")!r}
        loaded = {{
            "encoder": type(AutoModel.from_pretrained(directory, trust_remote_code=True)).__name__,
            "pretraining": type(AutoModelForPreTraining.from_pretrained(directory, trust_remote_code=True)).__name__,
        }}
        classifier = AutoModelForImageClassification.from_pretrained(directory, num_labels=3, trust_remote_code=True)
        loaded["classifier"] = (type(classifier).__name__, classifier.config.num_labels)
        print(json.dumps(loaded))
        """,
        tmp_path,
    )
    loaded = json.loads(stdout.strip().splitlines()[-1])
    assert loaded == {
        "encoder": "CXRViTMAEModel",
        "pretraining": "CXRViTMAEForPreTraining",
        "classifier": ["ViTMAEForChestXray", 3],
    }


def test_pipeline_in_process_uses_sigmoid_for_multilabel(tmp_path, capfd):
    model = save_classifier(tmp_path, num_labels=3)
    from PIL import Image

    image = Image.effect_noise((64, 64), 40)
    # The directory names its own pipeline (16-bit PNG and DICOM read by our loader), which transformers runs only
    # with trust_remote_code; with the package imported, the classes are the package's and nothing prompts.
    classify = pipeline("image-classification", model=str(tmp_path), trust_remote_code=True)
    assert "custom code" not in "".join(capfd.readouterr())
    assert type(classify.image_processor) is CXRImageProcessor
    assert type(classify).__name__ == "CXRImageClassificationPipeline"
    scores = classify(image, top_k=3)
    processor = CXRImageProcessor.from_pretrained(tmp_path)
    with torch.no_grad():
        probabilities = torch.sigmoid(model(**processor(image.convert("RGB"), return_tensors="pt")).logits[0])
    by_label = {entry["label"]: entry["score"] for entry in scores}
    for index, label in model.config.id2label.items():
        assert by_label[label] == pytest.approx(probabilities[index].item(), abs=1e-5)


def test_pretraining_dir_loads_into_classifier(tmp_path):
    pretrained = randomize_(CXRViTMAEForPreTraining(tiny_config()))
    pretrained.save_pretrained(tmp_path)
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is CXRViTMAEForPreTraining

    labels = {0: "Cardiomegaly", 1: "Edema", 2: "Consolidation", 3: "Atelectasis", 4: "Pleural Effusion"}
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=5, id2label=labels)
    assert type(classifier) is ViTMAEForChestXray
    assert classifier.config.id2label == labels and classifier.classifier.out_features == 5

    source = pretrained.state_dict()
    target = classifier.state_dict()
    encoder_keys = [k for k in source if k.startswith("vit.") and not k.startswith("vit.layernorm")]
    assert len(encoder_keys) == len([k for k in target if k.startswith("vit.")])
    for key in encoder_keys:
        assert torch.equal(source[key], target[key]), key
    assert not any(k.startswith("decoder") for k in target)
    # New head: MAE fine-tuning init, not copied from anywhere.
    assert classifier.classifier.weight.std().item() < 1e-4
    assert torch.equal(classifier.fc_norm.weight, torch.ones(192))


def test_package_exports_and_registration():
    from transformers import AutoConfig, AutoModel

    assert AutoConfig.for_model("cxr_vitmae").__class__ is CXRViTMAEConfig
    assert type(AutoModel.from_config(tiny_config())) is CXRViTMAEModel
    assert type(AutoModelForPreTraining.from_config(tiny_config())) is CXRViTMAEForPreTraining
    for name in ("CXRViTMAEConfig", "CXRViTMAEModel", "CXRViTMAEForPreTraining", "ViTMAEForChestXray"):
        assert hasattr(cxr_vitmae, name)


def attention_by_hand(attention, hidden: torch.Tensor, *, in_fp32: bool) -> torch.Tensor:
    batch, tokens, width = hidden.shape
    qkv = attention.qkv(hidden).view(batch, tokens, 3, attention.num_heads, attention.head_dim)
    query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    if in_fp32:
        with torch.autocast("cpu", enabled=False):
            output = torch.nn.functional.scaled_dot_product_attention(query.float(), key.float(), value.float())
        output = output.to(query.dtype)
    else:
        output = torch.nn.functional.scaled_dot_product_attention(query, key, value)
    return attention.o_proj(output.transpose(1, 2).reshape(batch, tokens, width))


@pytest.mark.parametrize("bf16_attention_is_slow", [True, False])
def test_cpu_bf16_attention_runs_in_fp32_where_bf16_is_slow(monkeypatch, bf16_attention_is_slow):
    monkeypatch.setattr(vit_building_blocks, "cpu_bf16_attention_is_slow", lambda: bf16_attention_is_slow)
    attention = randomize_(ViTMAEForChestXray(tiny_config())).vit.layers[0].attention.eval()
    hidden = torch.randn(2, 17, attention.qkv.in_features)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours = attention(hidden)[0]
        fp32_attention = attention_by_hand(attention, hidden, in_fp32=True)
        bf16_attention = attention_by_hand(attention, hidden, in_fp32=False)
    assert not torch.equal(fp32_attention, bf16_attention)  # else this test could not tell them apart
    assert torch.equal(ours, fp32_attention if bf16_attention_is_slow else bf16_attention)


def test_cpu_bf16_attention_is_slow_exactly_without_amx():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("needs /proc/cpuinfo")
    has_amx = "amx_tile" in cpuinfo.read_text().split()
    assert vit_building_blocks.cpu_bf16_attention_is_slow() is (not has_amx)
