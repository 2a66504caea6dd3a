"""`cxr-vitmae convert`: the paper's released checkpoints, their timm ports, stock transformers ViT-MAE and torchvision
DenseNets turned into model directories that the Auto classes load."""

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, ViTMAEForPreTraining

from ..models.conversion_cxr_densenet import convert_densenet_state_dict, is_densenet_state_dict
from ..models.conversion_cxr_vitmae import (
    convert_hf_vitmae_state_dict,
    convert_timm_vit_state_dict,
    is_vit_state_dict,
)
from ..models.conversion_utils import ConversionError, ConvertedCheckpoint
from .checkpoint_loading import CheckpointError, load_checkpoint_file, training_args, unwrap_state_dict

SOURCES = ("medical-mae", "timm", "hf-vitmae", "torchvision-densenet")
# Pre-training options that the paper's `args` record and that define the objective a converted MAE continues with.
_PRETRAINING_ARGS = ("mask_ratio", "norm_pix_loss")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth")


@dataclass
class ConversionResult:
    """The converted model (as saved) and what the conversion changed, for the user."""

    model: PreTrainedModel
    notes: list[str]


def convert_checkpoint(
    source: str,
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    preset: str | None = None,
    labels: str | None = None,
    image_size: int | None = None,
) -> ConversionResult:
    """Convert `checkpoint` (a file, or a directory for `hf-vitmae` and timm Hub folders) and save the model, with
    its image processor and modeling code, to `output_dir`."""
    converted = read_checkpoint(source, Path(checkpoint), preset=preset, labels=labels, image_size=image_size)
    model = converted.model_class(converted.config)
    load_exactly(model, converted.state_dict, Path(checkpoint).name, converted.fresh_prefixes)
    model.eval().save_pretrained(output_dir)
    return ConversionResult(model, converted.notes)


def read_checkpoint(
    source: str, path: Path, *, preset: str | None, labels: str | None, image_size: int | None
) -> ConvertedCheckpoint:
    if source not in SOURCES:
        raise ConversionError(f"Unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if source == "hf-vitmae":
        return _read_hf_vitmae(path, image_size)
    if path.is_dir():
        path = _weights_file_in(path)
    raw = load_checkpoint_file(path)
    state_dict = unwrap_state_dict(raw, path)
    if source != "torchvision-densenet" and is_vit_state_dict(state_dict):
        args = training_args(raw)
        pretraining = "decoder_embed.weight" in state_dict and args is not None
        overrides = {name: getattr(args, name) for name in _PRETRAINING_ARGS if pretraining and hasattr(args, name)}
        return convert_timm_vit_state_dict(state_dict, preset=preset, labels=labels, image_size=image_size, **overrides)
    if is_densenet_state_dict(state_dict):
        return convert_densenet_state_dict(state_dict, preset=preset, labels=labels)
    expected = (
        "a DenseNet" if source == "torchvision-densenet" else "a ViT (patch_embed.proj.weight, pos_embed) or a DenseNet"
    )
    raise ConversionError(
        f"{path.name} is not {expected} checkpoint (features.conv0.weight); its keys look like "
        f"{', '.join(list(state_dict)[:6])}"
    )


def _weights_file_in(directory: Path) -> Path:
    for name in _WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"{directory}: no weights file ({', '.join(_WEIGHT_FILES)}) in this directory")


def _read_hf_vitmae(path: Path, image_size: int | None) -> ConvertedCheckpoint:
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a transformers model directory (no config.json)")
    try:
        stock, loading_info = ViTMAEForPreTraining.from_pretrained(path, output_loading_info=True)
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: not a loadable transformers ViTMAEForPreTraining directory ({error})"
        ) from error
    if loading_info["missing_keys"] or loading_info["mismatched_keys"]:
        raise ConversionError(
            f"{path} is not a complete ViTMAEForPreTraining checkpoint: missing {sorted(loading_info['missing_keys'])}"
            f", mismatched {sorted(loading_info['mismatched_keys'])}"
        )
    return convert_hf_vitmae_state_dict(stock.state_dict(), stock.config, image_size=image_size)


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_exactly(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    checkpoint_name: str,
    fresh_prefixes: tuple[str, ...] = (),
) -> None:
    """Load `state_dict` into `model` only if every tensor has a place of the right shape and every place is filled
    (except parameters under `fresh_prefixes`, which keep their initialisation); otherwise one error lists the
    unknown keys, the missing keys and the shape mismatches."""
    expected = model.state_dict()
    unknown = sorted(set(state_dict) - set(expected))
    missing = sorted(key for key in set(expected) - set(state_dict) if not key.startswith(fresh_prefixes))
    mismatched = [
        f"{key} {tuple(value.shape)} vs {tuple(expected[key].shape)}"
        for key, value in state_dict.items()
        if key in expected and value.shape != expected[key].shape
    ]
    problems = [
        f"{len(items)} {kind}: {_listing(items)}"
        for kind, items in (("unknown keys", unknown), ("missing keys", missing), ("shape mismatches", mismatched))
        if items
    ]
    if problems:
        raise ConversionError(f"{checkpoint_name} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=not fresh_prefixes)
