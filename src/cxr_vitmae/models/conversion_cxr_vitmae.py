"""Checkpoint remapping for the cxr_vitmae models: timm / facebookresearch-mae layouts (the paper's released files
and their timm ports) and stock transformers `ViTMAEForPreTraining`."""

import re

import torch

from .configuration_cxr_vitmae import VIT_PRESETS, CXRViTMAEConfig
from .conversion_utils import (
    IMAGENET_HEAD_SIZES,
    ConversionError,
    ConvertedCheckpoint,
    classifier_label_options,
)
from .modeling_cxr_vitmae import CXRViTMAEForPreTraining, CXRViTMAEModel, ViTMAEForChestXray
from .vit_building_blocks import resize_position_table

# timm / MAE name -> ours, applied in order to every key (the block rules run after the prefix rules).
_TIMM_RULES = [
    (r"^cls_token$", "vit.embeddings.cls_token"),
    (r"^pos_embed$", "vit.embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "vit.embeddings.patch_embeddings.projection."),
    (r"^blocks\.(\d+)\.", r"vit.layers.\1."),
    (r"^norm\.", "vit.layernorm."),
    (r"^head\.", "classifier."),
    (r"^mask_token$", "decoder.mask_token"),
    (r"^decoder_blocks\.(\d+)\.", r"decoder.decoder_layers.\1."),
    (r"^(decoder_(?:pos_embed|embed|norm|pred))", r"decoder.\1"),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
    (r"\.attn\.qkv\.", ".attention.qkv."),
    (r"\.attn\.proj\.", ".attention.o_proj."),
]


def is_vit_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """True for timm / MAE ViT layouts (the routing test of the `medical-mae` and `timm` sources)."""
    return "patch_embed.proj.weight" in state_dict and "pos_embed" in state_dict


def _rename(key: str) -> str:
    for pattern, replacement in _TIMM_RULES:
        key = re.sub(pattern, replacement, key)
    return key


def _count(state_dict: dict, pattern: str) -> int:
    indices = {int(m.group(1)) for key in state_dict if (m := re.match(pattern, key))}
    return max(indices) + 1 if indices else 0


def _architecture_from_shapes(state_dict: dict, preset: str | None) -> dict:
    """Config fields read off the tensors; head counts (which no shape reveals) come from the preset."""
    required = ["pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight"]
    if "decoder_embed.weight" in state_dict:
        required.append("decoder_blocks.0.mlp.fc1.weight")
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise ConversionError(
            f"The checkpoint has no {', '.join(missing)}: not a complete timm / MAE ViT state dict (truncated, or "
            "another architecture)"
        )
    hidden_size = state_dict["pos_embed"].shape[-1]
    patch_size = state_dict["patch_embed.proj.weight"].shape[-1]
    if preset is None:
        matches = [name for name, fields in VIT_PRESETS.items() if fields["hidden_size"] == hidden_size]
        if not matches:
            raise ConversionError(
                f"No preset has width {hidden_size}, so the number of attention heads is unknown; pass --preset"
            )
        preset = matches[0]
    elif preset not in VIT_PRESETS:
        raise ConversionError(f"Unknown ViT preset {preset!r}; expected one of {sorted(VIT_PRESETS)}")
    fields = dict(VIT_PRESETS[preset])
    if fields["hidden_size"] != hidden_size:
        raise ConversionError(
            f"--preset {preset} is {fields['hidden_size']} wide but the checkpoint's tensors are {hidden_size} wide"
        )
    num_positions = state_dict["pos_embed"].shape[1]
    grid = round((num_positions - 1) ** 0.5)
    if grid * grid != num_positions - 1:
        raise ConversionError(f"pos_embed has {num_positions} rows: expected a CLS row plus a square patch grid")
    fields.update(
        hidden_size=hidden_size,
        num_hidden_layers=_count(state_dict, r"blocks\.(\d+)\."),
        intermediate_size=state_dict["blocks.0.mlp.fc1.weight"].shape[0],
        patch_size=patch_size,
        image_size=grid * patch_size,
        num_channels=state_dict["patch_embed.proj.weight"].shape[1],
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
    )
    if "decoder_embed.weight" in state_dict:
        decoder_width = state_dict["decoder_embed.weight"].shape[0]
        if decoder_width != fields["decoder_hidden_size"]:
            raise ConversionError(
                f"The decoder is {decoder_width} wide, but preset {preset} has a {fields['decoder_hidden_size']}-wide "
                "decoder, so its number of heads is unknown; pass the --preset whose decoder matches"
            )
        fields.update(
            decoder_num_hidden_layers=_count(state_dict, r"decoder_blocks\.(\d+)\."),
            decoder_intermediate_size=state_dict["decoder_blocks.0.mlp.fc1.weight"].shape[0],
        )
    return fields


def _resample_position_tables(renamed: dict, fields: dict, image_size: int | None) -> None:
    """Bring the position tables (encoder, and decoder when present) to `image_size`, bicubically."""
    if image_size is None or image_size == fields["image_size"]:
        return
    if image_size % fields["patch_size"]:
        raise ConversionError(f"--image-size {image_size} is not a multiple of the patch size {fields['patch_size']}")
    grid = image_size // fields["patch_size"]
    for key in ("vit.embeddings.position_embeddings", "decoder.decoder_pos_embed"):
        if key in renamed:
            renamed[key] = resize_position_table(renamed[key], grid, grid)
    fields["image_size"] = image_size


def convert_timm_vit_state_dict(
    state_dict: dict[str, torch.Tensor],
    *,
    preset: str | None = None,
    labels: str | None = None,
    image_size: int | None = None,
    **config_overrides,
) -> ConvertedCheckpoint:
    """A timm / facebookresearch-mae ViT state dict as one of our models.

    - MAE pre-training (encoder, `norm`, `mask_token`, `decoder_*`) -> `CXRViTMAEForPreTraining`;
    - classifier (`head.*`): with `fc_norm` it pooled the mean of the patch tokens (the paper's fine-tuning,
      `global_pool=True`), without it the CLS token after `norm` (timm's default), whose weights become `fc_norm`
      -> `ViTMAEForChestXray` with the labels of `labels` or of the head size; an ImageNet head (1000 / 21k
      classes) is replaced by a new, untrained head for `labels` (default: NIH);
    - encoder only (`norm`, no head, no decoder) -> `CXRViTMAEModel`.

    `image_size` other than the checkpoint's resamples the position tables (bicubic, CLS row kept).
    """
    state_dict = dict(state_dict)
    fields = _architecture_from_shapes(state_dict, preset)
    fresh_prefixes, notes = (), []
    head_size = state_dict["head.weight"].shape[0] if "head.weight" in state_dict else None
    if head_size in IMAGENET_HEAD_SIZES:
        # An ImageNet classifier is a starting point: keep everything but its head, which a new one replaces.
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
        labels = labels or "nih"
        fresh_prefixes = ("classifier.",)
        notes.append(f"replaced the {head_size}-class ImageNet head by a new, untrained {labels} head")
    if head_size is not None:
        model_class = ViTMAEForChestXray
        use_mean_pooling = "fc_norm.weight" in state_dict
        if not use_mean_pooling:
            state_dict = {re.sub(r"^norm\.", "fc_norm.", key): value for key, value in state_dict.items()}
        num_outputs = None if fresh_prefixes else head_size
        fields.update(use_mean_pooling=use_mean_pooling, **classifier_label_options(num_outputs, labels))
    elif "decoder_embed.weight" in state_dict:
        model_class = CXRViTMAEForPreTraining
    elif "fc_norm.weight" in state_dict:
        raise ConversionError(
            "The checkpoint has fc_norm but no head: a classifier without its head cannot be converted"
        )
    else:
        model_class = CXRViTMAEModel

    renamed = {_rename(key): value for key, value in state_dict.items()}
    _resample_position_tables(renamed, fields, image_size)
    if model_class is CXRViTMAEModel:
        # The base model's own keys carry no `vit.` prefix.
        renamed = {key.removeprefix("vit."): value for key, value in renamed.items()}
    config = CXRViTMAEConfig(**{**fields, **config_overrides})
    return ConvertedCheckpoint(model_class, config, renamed, fresh_prefixes, notes)


def convert_hf_vitmae_state_dict(
    state_dict: dict[str, torch.Tensor], stock_config, *, image_size: int | None = None
) -> ConvertedCheckpoint:
    """A stock transformers `ViTMAEForPreTraining` (in-memory transformers-5 names) as `CXRViTMAEForPreTraining`.

    The only renaming: the separate `attention.{q,k,v}_proj` become one `attention.qkv` (rows in q, k, v order).
    Architecture fields, mask ratio and `norm_pix_loss` are carried over, including the stock config's
    LayerNorm epsilon (1e-12 in facebook/vit-mae-*, where the original MAE used 1e-6).
    """
    renamed = {}
    for key, value in state_dict.items():
        match = re.match(r"^(.*\.attention\.)([qkv])_proj\.(weight|bias)$", key)
        if match is None:
            renamed[key] = value
        elif match.group(2) == "q":
            prefix, _, kind = match.groups()
            renamed[f"{prefix}qkv.{kind}"] = torch.cat([state_dict[f"{prefix}{p}_proj.{kind}"] for p in "qkv"])
    fields = {
        name: getattr(stock_config, name)
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "hidden_act",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "initializer_range",
            "layer_norm_eps",
            "image_size",
            "patch_size",
            "num_channels",
            "qkv_bias",
            "decoder_hidden_size",
            "decoder_num_hidden_layers",
            "decoder_num_attention_heads",
            "decoder_intermediate_size",
            "mask_ratio",
            "norm_pix_loss",
        )
    }
    _resample_position_tables(renamed, fields, image_size)
    return ConvertedCheckpoint(CXRViTMAEForPreTraining, CXRViTMAEConfig(**fields), renamed)
