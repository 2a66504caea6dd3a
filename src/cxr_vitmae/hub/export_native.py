"""Export a fine-tuned classifier to model classes that ship with transformers, so it loads with no remote code.

- `ViTMAEForChestXray` -> `BeitForImageClassification`: BEiT with absolute position embeddings, no relative position
  bias and no layer scale is exactly a pre-norm timm ViT; its pooler is mean pooling + LayerNorm (our `fc_norm`), and
  with `use_mean_pooling=False` its final `layernorm` is applied per token before the CLS token is taken, which equals
  our `fc_norm` on the CLS token. BEiT's key projection has no bias; dropping ours is exact, because a key bias adds
  the same value `q . b_k` to every logit of a query's softmax.
- `DenseNetForChestXray` -> `TimmWrapperForImageClassification` around timm's `densenet121/169/201`, whose
  `features.*` / `classifier.*` layout is ours.
- `TimmForChestXray` -> `TimmWrapperForImageClassification` of the same architecture: the weights are already the
  stock wrapper's (`timm_model.*`), only `config.json` changes.

The image processor travels as a stock `ViTImageProcessor` (BEiT) or as timm's `pretrained_cfg` in `config.json`
(timm_wrapper). Both read 8-bit RGB images through the pipeline, so they match our `CXRImageProcessor` up to uint8
rounding of the resized image (and PIL vs. torch bicubic for timm), not bit for bit.

That 8-bit conversion is transformers' own (`transformers.image_utils.load_image`, which the pipeline and the Hub widget
call): it clips a 16-bit PNG at 255 instead of rescaling it, and cannot open DICOM. An export carries no code, so
nothing of ours runs there; `warn_if_saturated` detects such a file (`cxr-vitmae predict` calls it on a native export,
whose scores it computes from the rescaled image).
"""

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    BeitConfig,
    BeitForImageClassification,
    PreTrainedModel,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
    ViTImageProcessor,
)
from transformers.image_utils import PILImageResampling

from ..errors import InputError
from ..model_directory import model_directory
from ..model_families import ModelFamily, families, family_of, resolve
from ..models import (
    CXRDenseNetConfig,
    CXRTimmConfig,
    CXRViTMAEConfig,
    DenseNetForChestXray,
    TimmForChestXray,
    ViTMAEForChestXray,
)
from ..models.configuration_cxr_densenet import CXR_DENSENET_PRESETS
from ..models.conversion_utils import ConversionError

__all__ = [
    "EXPORT_LOGITS_TOLERANCE",
    "SaturationWarning",
    "beit_config",
    "export_native",
    "stock_8bit_saturation",
    "warn_if_saturated",
]

# Float32 reorderings (split qkv, SDPA vs. our attention call, timm's pooling) stay around 1e-6; a mapping mistake is
# orders of magnitude larger.
EXPORT_LOGITS_TOLERANCE = 1e-4


def _exportable() -> dict[str, ModelFamily]:
    """model_type -> the family, for every family with a stock-transformers route (`ModelFamily.native_export`)."""
    return {family.model_type: family for family in families() if family.native_export is not None}


def export_native(model_dir: str | Path, output_dir: str | Path) -> Path:
    """Write the fine-tuned classifier in `model_dir` to `output_dir` as a stock transformers model.

    The route is the model family's (`ModelFamily.native_export`). The result has `model_type` `beit` (ViT) or
    `timm_wrapper` (DenseNet, timm), carries `id2label`, `label2id` and `problem_type`, holds no code and no `auto_map`,
    and works with `pipeline("image-classification", model=...)` without `trust_remote_code`. Its logits are checked
    against the original model before anything is written.

    `model_dir` may also be a Hub repository id (see `model_directory`).

    Raises:
        InputError: `model_dir` is not a fine-tuned cxr-vitmae classifier (e.g. a pre-training checkpoint), its
            architecture or preprocessing has no stock equivalent, or `output_dir` is not empty.
    """
    model_dir, output_dir = model_directory(model_dir), Path(output_dir)
    _check_is_classifier(model_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        # Stale code files or an `auto_map` config left there would defeat the point of a code-free export.
        raise InputError(f"Output directory '{output_dir}' exists and is not empty; choose a new or empty directory.")

    model, loading_info = AutoModelForImageClassification.from_pretrained(model_dir, output_loading_info=True)
    if loading_info.get("missing_keys"):
        raise InputError(
            f"'{model_dir}' lacks weights of the classifier ({', '.join(sorted(loading_info['missing_keys'])[:5])}"
            "...); only fine-tuned classifiers can be exported."
        )
    model = model.float().eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)

    native, native_processor, image_size = resolve(family_of(model).native_export)(model, processor)

    _check_same_logits(model, native, model.config.num_channels, image_size)

    output_dir.mkdir(parents=True, exist_ok=True)
    native.save_pretrained(output_dir)
    if native_processor is not None:
        native_processor.save_pretrained(output_dir)
    _check_no_remote_code(output_dir)
    return output_dir


def _check_is_classifier(model_dir: Path) -> None:
    config = AutoConfig.from_pretrained(model_dir)
    exportable = _exportable()
    if config.model_type not in exportable:
        raise InputError(
            f"'{model_dir}' holds a model of type {config.model_type!r}; export-native converts cxr-vitmae "
            f"classifiers ({', '.join(sorted(exportable))})."
        )
    expected = exportable[config.model_type].classifier.split(":")[1]
    # The Auto class would happily load a pre-training checkpoint into a classifier with a random head.
    architectures = config.architectures or []
    if expected not in architectures:
        found = ", ".join(architectures) or "no architecture"
        raise InputError(
            f"'{model_dir}' holds {found}, not a {expected}; only fine-tuned classifiers can be exported "
            "(fine-tune the pre-training checkpoint first)."
        )
    if not config.num_labels:
        raise InputError(f"'{model_dir}' has no classification head (num_labels = 0); nothing to export.")


def _label_kwargs(config) -> dict:
    id2label = {int(index): label for index, label in config.id2label.items()}
    return {
        "num_labels": len(id2label),
        "id2label": id2label,
        "label2id": {label: index for index, label in id2label.items()},
        "problem_type": config.problem_type,
    }


def beit_config(config: CXRViTMAEConfig) -> BeitConfig:
    """The stock BEiT configuration that computes exactly what a `ViTMAEForChestXray` of `config` computes: absolute
    position embeddings, no relative position bias, no layer scale, mean pooling (or the CLS token)."""
    return BeitConfig(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        drop_path_rate=config.drop_path_rate,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        use_mask_token=False,
        use_absolute_position_embeddings=True,
        use_relative_position_bias=False,
        use_shared_relative_position_bias=False,
        layer_scale_init_value=0.0,
        use_mean_pooling=config.use_mean_pooling,
        use_auxiliary_head=False,
        **_label_kwargs(config),
    )


def vit_to_beit(model: ViTMAEForChestXray, processor) -> tuple[BeitForImageClassification, ViTImageProcessor, int]:
    """The ViT's export: BEiT with mean pooling, a stock `ViTImageProcessor`, checked at the model's input size."""
    return _vit_to_beit(model), _vit_image_processor(processor), model.config.image_size


def densenet_to_timm(model: DenseNetForChestXray, processor) -> tuple[TimmWrapperForImageClassification, None, int]:
    """The DenseNet's export: timm's DenseNet in `timm_wrapper`, whose preprocessing lives in config.json
    (`pretrained_cfg`), so no processor file; checked at the processor's crop size."""
    return _densenet_to_timm(model, processor), None, processor.crop_size["height"]


def timm_to_timm_wrapper(model: TimmForChestXray, processor) -> tuple[TimmWrapperForImageClassification, None, int]:
    """A timm family model's export: the stock wrapper of the same timm architecture and weights, its preprocessing
    in config.json (`pretrained_cfg`); checked at the processor's crop size."""
    config: CXRTimmConfig = model.config
    labels = _label_kwargs(config)
    # Only what changes the network's shape or its eval-time output; dropout rates do neither.
    channels = {"in_chans": config.num_channels} if config.num_channels != 3 else {}
    model_args = {**(config.model_args or {}), **channels}
    timm_config = TimmWrapperConfig(
        architecture=config.architecture,
        model_args=model_args or None,
        pretrained_cfg=_timm_pretrained_cfg(processor, labels["num_labels"]),
        **labels,
    )
    native = TimmWrapperForImageClassification(timm_config)
    native.load_state_dict({name: tensor.clone() for name, tensor in model.state_dict().items()}, strict=True)
    return native.eval(), None, processor.crop_size["height"]


def _vit_to_beit(model: ViTMAEForChestXray) -> BeitForImageClassification:
    config: CXRViTMAEConfig = model.config
    native = BeitForImageClassification(beit_config(config))

    source = model.state_dict()
    hidden = config.hidden_size
    mapped = {
        f"beit.embeddings.{name}": source[f"vit.embeddings.{name}"]
        for name in (
            "cls_token",
            "position_embeddings",
            "patch_embeddings.projection.weight",
            "patch_embeddings.projection.bias",
        )
    }
    for index in range(config.num_hidden_layers):
        ours, theirs = f"vit.layers.{index}.", f"beit.layers.{index}."
        q_weight, k_weight, v_weight = source[ours + "attention.qkv.weight"].split(hidden, dim=0)
        qkv_bias = source.get(ours + "attention.qkv.bias")
        if qkv_bias is None:
            q_bias = v_bias = torch.zeros(hidden, dtype=q_weight.dtype)
        else:
            q_bias, _, v_bias = qkv_bias.split(hidden, dim=0)
        mapped.update(
            {
                theirs + "attention.q_proj.weight": q_weight,
                theirs + "attention.q_proj.bias": q_bias,
                theirs + "attention.k_proj.weight": k_weight,
                theirs + "attention.v_proj.weight": v_weight,
                theirs + "attention.v_proj.bias": v_bias,
            }
        )
        for name in ("attention.o_proj", "layernorm_before", "layernorm_after", "mlp.fc1", "mlp.fc2"):
            for kind in ("weight", "bias"):
                mapped[f"{theirs}{name}.{kind}"] = source[f"{ours}{name}.{kind}"]
    norm = "beit.pooler.layernorm" if config.use_mean_pooling else "beit.layernorm"
    for kind in ("weight", "bias"):
        mapped[f"{norm}.{kind}"] = source[f"fc_norm.{kind}"]
        mapped[f"classifier.{kind}"] = source[f"classifier.{kind}"]

    native.load_state_dict({name: tensor.clone() for name, tensor in mapped.items()}, strict=True)
    return native.eval()


def _vit_image_processor(processor) -> ViTImageProcessor:
    return ViTImageProcessor(
        do_resize=processor.do_resize,
        size=dict(processor.size),
        resample=processor.resample,
        do_center_crop=processor.do_center_crop,
        crop_size=dict(processor.crop_size),
        do_rescale=processor.do_rescale,
        rescale_factor=processor.rescale_factor,
        do_normalize=processor.do_normalize,
        image_mean=list(processor.image_mean),
        image_std=list(processor.image_std),
        # Radiographs are mostly grayscale; the pipeline converts to RGB, direct processor calls should too.
        do_convert_rgb=True,
    )


def _densenet_architecture(config: CXRDenseNetConfig) -> str:
    for name, preset in CXR_DENSENET_PRESETS.items():
        if (
            tuple(config.block_config) == tuple(preset["block_config"])
            and config.growth_rate == preset["growth_rate"]
            and config.num_init_features == preset["num_init_features"]
            and config.bn_size == 4
            and config.num_channels == 3
        ):
            return name
    raise InputError(
        f"This DenseNet (growth_rate={config.growth_rate}, block_config={list(config.block_config)}, "
        f"num_init_features={config.num_init_features}, bn_size={config.bn_size}, num_channels={config.num_channels}) "
        f"is not one of timm's {', '.join(CXR_DENSENET_PRESETS)}, so timm_wrapper cannot rebuild it."
    )


def _timm_pretrained_cfg(processor, num_labels: int) -> dict:
    """Our processor's resize / crop / normalisation as timm's eval transform settings."""
    size, crop = dict(processor.size), dict(processor.crop_size)
    expressible = (
        processor.do_resize
        and processor.do_center_crop
        and set(size) == {"shortest_edge"}
        and crop.get("height") == crop.get("width")
        and processor.do_rescale
        and math.isclose(processor.rescale_factor, 1 / 255)
        and processor.do_normalize
        and PILImageResampling(processor.resample) == PILImageResampling.BICUBIC
    )
    if not expressible:
        raise InputError(
            "The model's image processor cannot be expressed as timm's eval transform (it needs a bicubic resize of "
            "the short side, a square center crop, rescaling by 1/255 and normalisation); got "
            f"size={size}, crop_size={crop}, resample={processor.resample}."
        )
    resize, crop_side = size["shortest_edge"], crop["height"]
    # timm resizes the short side to floor(crop / crop_pct); nudge crop_pct down when float rounding would land below.
    crop_pct = crop_side / resize
    while math.floor(crop_side / crop_pct) < resize:
        crop_pct = math.nextafter(crop_pct, 0.0)
    return {
        "input_size": [3, crop_side, crop_side],
        "interpolation": "bicubic",
        "mean": [float(value) for value in processor.image_mean],
        "std": [float(value) for value in processor.image_std],
        "crop_pct": crop_pct,
        "crop_mode": "center",
        "num_classes": num_labels,
    }


def _densenet_to_timm(model: DenseNetForChestXray, processor) -> TimmWrapperForImageClassification:
    config: CXRDenseNetConfig = model.config
    labels = _label_kwargs(config)
    model_args = {"proj_drop_rate": float(config.drop_rate)} if config.drop_rate else None
    timm_config = TimmWrapperConfig(
        architecture=_densenet_architecture(config),
        model_args=model_args,
        pretrained_cfg=_timm_pretrained_cfg(processor, labels["num_labels"]),
        **labels,
    )
    native = TimmWrapperForImageClassification(timm_config)
    mapped = {f"timm_model.features.{name}": tensor for name, tensor in model.densenet.features.state_dict().items()}
    mapped.update({f"timm_model.classifier.{name}": tensor for name, tensor in model.classifier.state_dict().items()})
    native.load_state_dict({name: tensor.clone() for name, tensor in mapped.items()}, strict=True)
    return native.eval()


@torch.no_grad()
def _check_same_logits(model: PreTrainedModel, native: PreTrainedModel, channels: int, image_size: int) -> None:
    pixel_values = torch.randn(2, channels, image_size, image_size, generator=torch.Generator().manual_seed(0))
    expected = model(pixel_values).logits
    exported = native(pixel_values).logits
    difference = (exported - expected).abs().max().item()
    if not difference <= EXPORT_LOGITS_TOLERANCE:
        raise ConversionError(
            f"The exported {type(native).__name__} disagrees with the original model (max abs logit difference "
            f"{difference:.3g} > {EXPORT_LOGITS_TOLERANCE}); nothing was written."
        )


def _check_no_remote_code(output_dir: Path) -> None:
    code_files = sorted(path.name for path in output_dir.rglob("*.py"))
    config = json.loads((output_dir / "config.json").read_text())
    if code_files or "auto_map" in config:
        raise ConversionError(
            f"The export in '{output_dir}' would need remote code ({code_files or 'auto_map in config.json'})."
        )


class SaturationWarning(UserWarning):
    """A 16-bit image that transformers' own 8-bit RGB conversion (pipeline, Hub widget) saturates."""


# PIL modes that hold 16-bit grayscale samples; `convert("RGB")` clips them at 255 ("I" is how many tools store it).
_PIL_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def stock_8bit_saturation(source: str | os.PathLike | Image.Image) -> float:
    """The fraction of `source`'s pixels that transformers' own image loading (`load_image`: PIL, then 8-bit RGB, as
    the image-classification pipeline and the Hub widget of a native export read files) clips at 255.

    Only 16-bit grayscale images saturate: their values above 255 all become white, where our loader divides them by
    65535. 0.0 for 8-bit images, for 16-bit colour PNGs (PIL reduces those to their high byte, no clipping) and for
    files PIL cannot open, such as DICOM (which the stock pipeline refuses with an error instead).
    """
    if isinstance(source, Image.Image):
        return _saturated_fraction(source)
    try:
        with Image.open(source) as image:
            return _saturated_fraction(image)
    except (OSError, ValueError, SyntaxError):
        return 0.0


def _saturated_fraction(image: Image.Image) -> float:
    if image.mode not in _PIL_16BIT_MODES:
        return 0.0
    values = np.asarray(image)
    return float(np.mean(values > 255)) if values.size else 0.0


def warn_if_saturated(source: str | os.PathLike | Image.Image, name: str | None = None) -> float:
    """Warn (`SaturationWarning`) when transformers' own 8-bit conversion saturates `source` (see
    `stock_8bit_saturation`), which a native export's pipeline and Hub widget would then score wrongly; return the
    saturated fraction."""
    fraction = stock_8bit_saturation(source)
    if fraction > 0:
        label = name or (str(source) if not isinstance(source, Image.Image) else "this image")
        warnings.warn(
            f"{label} is a 16-bit image: transformers' pipeline and the Hub widget convert it to 8-bit RGB without "
            f"rescaling, which clips {fraction:.1%} of its pixels to white, so a native export scores it wrongly "
            "there. Use `cxr-vitmae predict` (which rescales it) or the cxr-vitmae model with "
            "`pipeline(..., trust_remote_code=True)`.",
            SaturationWarning,
            stacklevel=2,
        )
    return fraction
