"""Renaming DenseNet checkpoints of the paper and related codebases to `DenseNetForChestXray` / `CXRDenseNetModel`.

Every layout handled here holds torchvision's (or timm's, which is name-for-name the same) `features.*` and
`classifier.*` under some wrapper prefix:

- torchvision `densenet*()` state dicts, including pre-0.4 files whose dense layers are named `norm.1`, `conv.2`, ...;
- the paper's fine-tuned DenseNet-121 (`{"model": <torchvision state dict>, "args": Namespace, ...}`);
- the paper's DenseNet "MAE" pre-training, a segmentation_models_pytorch U-Net whose encoder is torchvision's
  DenseNet: `model.encoder.features.*` plus decoder and segmentation-head tensors, which are not part of a classifier;
- the CheXNet-style codebase behind the ImageNet baseline (PhoenixMark0/ChestX-ray14-Classification), which wraps
  torchvision's model as `self.densenet121` under DataParallel and replaces the head by `Sequential(Linear, Sigmoid)`:
  `module.densenet121.features.*`, `module.densenet121.classifier.0.*`;
- timm `densenet*` weights, bare or inside transformers' `TimmWrapper*` (`timm_model.`).

An ImageNet head (torchvision's and timm's stock 1000-class weights) is a starting point, not a chest X-ray
classifier: it is replaced by a new, untrained head for the requested label set, as the ViT converter does.
"""

import re

import torch

from .configuration_cxr_densenet import CXR_DENSENET_PRESETS, CXRDenseNetConfig
from .conversion_utils import (
    IMAGENET_HEAD_SIZES,
    ConversionError,
    ConvertedCheckpoint,
    classifier_label_options,
    strip_prefixes,
)
from .modeling_cxr_densenet import CXRDenseNetModel, DenseNetForChestXray

WRAPPER_PREFIXES = (
    "module.",
    "timm_model.",
    "model.encoder.",
    "encoder.",
    "densenet121.",
    "densenet169.",
    "densenet201.",
    # Our own base-model prefix, so a state dict of an already converted model converts to itself.
    "densenet.",
)
UNET_DECODER_PREFIXES = ("model.decoder.", "decoder.", "model.segmentation_head.", "segmentation_head.")
STEM_KEY = "features.conv0.weight"

# torchvision's own `_load_state_dict` pattern for the pre-0.4 names; num_batches_tracked is added because a file
# mixing both eras should not half-convert a layer.
_LEGACY_DENSE_LAYER = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)
_DENSE_LAYER = re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\.")
# The CheXNet-style head is Sequential(Linear, Sigmoid): its Linear is `classifier.0`.
_CLASSIFIER = re.compile(r"^classifier\.(?:0\.)?(weight|bias)$")


def _stripped_name(key: str) -> str:
    name = next(iter(strip_prefixes({key: None}, WRAPPER_PREFIXES)))
    return _LEGACY_DENSE_LAYER.sub(r"\1\2", name)


def is_densenet_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether `state_dict`, once the wrapper prefixes of the known layouts are removed, has a DenseNet stem."""
    return any(_stripped_name(key) == STEM_KEY for key in state_dict)


def block_config_of(names: list[str]) -> tuple[int, ...]:
    """Dense layers per block, counted from `features.denseblockB.denselayerL.*` names."""
    layers: dict[int, set[int]] = {}
    for name in names:
        match = _DENSE_LAYER.match(name)
        if match:
            layers.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    return tuple(len(layers[block]) for block in sorted(layers))


def _resolve_preset(preset: str | None, block_config: tuple[int, ...]) -> str:
    by_blocks = {tuple(spec["block_config"]): name for name, spec in CXR_DENSENET_PRESETS.items()}
    found = by_blocks.get(block_config)
    if preset is None:
        if found is None:
            known = "; ".join(f"{name} {tuple(spec['block_config'])}" for name, spec in CXR_DENSENET_PRESETS.items())
            raise ConversionError(
                f"Cannot infer the DenseNet preset: the checkpoint has {block_config} dense layers per block, which "
                f"matches none of the supported presets ({known})"
            )
        return found
    if preset not in CXR_DENSENET_PRESETS:
        raise ConversionError(
            f"Unknown DenseNet preset {preset!r}; valid presets are: {', '.join(sorted(CXR_DENSENET_PRESETS))}"
        )
    expected = tuple(CXR_DENSENET_PRESETS[preset]["block_config"])
    if expected != block_config:
        hint = f" (that is {found})" if found else ""
        raise ConversionError(
            f"--preset {preset} expects block_config {expected} but the checkpoint has {block_config} dense layers "
            f"per block{hint}"
        )
    return preset


def convert_densenet_state_dict(
    state_dict: dict[str, torch.Tensor], *, preset: str | None = None, labels: str | None = None
) -> ConvertedCheckpoint:
    """Rename an unwrapped DenseNet state dict to `DenseNetForChestXray` (when it has a classifier) or to
    `CXRDenseNetModel` (backbone only), with the matching configuration.

    `preset` (densenet121/169/201) is inferred from the number of dense layers per block unless given, in which case
    it must agree with them. `labels` names the label set of the head (see `classifier_label_options`) and is ignored
    for a backbone; a 1000/21k-class ImageNet head is left out (`fresh_prefixes`) for a new head of `labels`
    (default NIH) to take its place. U-Net decoder tensors of the paper's pre-training are dropped; any other key
    that is not part of a DenseNet is passed through under its original name, so a strict load reports it instead
    of it vanishing.
    """
    names = {key: _stripped_name(key) for key in state_dict}
    if STEM_KEY not in names.values():
        sample = ", ".join(list(state_dict)[:8])
        raise ConversionError(
            f"The checkpoint is not a DenseNet checkpoint: expected {STEM_KEY} (after removing any of the prefixes "
            f"{', '.join(WRAPPER_PREFIXES)}); found keys such as {sample}"
        )

    backbone: dict[str, torch.Tensor] = {}
    head: dict[str, torch.Tensor] = {}
    unknown: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    sources: dict[str, list[str]] = {}
    is_unet = any("encoder.features." in key and name.startswith("features.") for key, name in names.items())
    for key, value in state_dict.items():
        name = names[key]
        if name.startswith("features."):
            backbone[name] = value
        elif match := _CLASSIFIER.match(name):
            name = "classifier." + match.group(1)
            head[match.group(1)] = value
        elif is_unet and name.startswith(UNET_DECODER_PREFIXES):
            dropped.append(key)
            continue
        else:
            unknown[key] = value
            continue
        sources.setdefault(name, []).append(key)

    # Two source keys landing on one name (`classifier.weight` next to `classifier.0.weight`, or a file mixing
    # layouts) would otherwise keep whichever came last.
    clashes = {name: keys for name, keys in sources.items() if len(keys) > 1}
    if clashes:
        listed = "; ".join(f"{name} <- {', '.join(keys)}" for name, keys in list(clashes.items())[:5])
        raise ConversionError(f"Several checkpoint keys map to the same DenseNet parameter: {listed}")
    notes = []
    if dropped:
        notes.append(f"dropped {len(dropped)} U-Net decoder tensors of the pre-training checkpoint")
    legacy = sum(1 for key in state_dict if _LEGACY_DENSE_LAYER.search(key))
    if legacy:
        notes.append(f"renamed {legacy} pre-0.4 torchvision dense-layer tensors (norm.1 -> norm1, ...)")

    # torch < 0.4.1 wrote no BatchNorm batch counter; torch's BatchNorm loader fills it with 0 for such files, and so
    # do we, so the converted state dict is complete.
    for name in [name for name in backbone if name.endswith(".running_mean")]:
        counter = name.removesuffix("running_mean") + "num_batches_tracked"
        backbone.setdefault(counter, torch.tensor(0, dtype=torch.long))

    preset = _resolve_preset(preset, block_config_of(list(backbone)))
    config_options = {"num_channels": int(backbone[STEM_KEY].shape[1])}
    if not head:
        if labels is not None:
            notes.append(f"the checkpoint has no classification head, so --labels {labels} was not used")
        config = CXRDenseNetConfig.from_preset(preset, **config_options)
        return ConvertedCheckpoint(CXRDenseNetModel, config, {**backbone, **unknown}, notes=notes)

    if "weight" not in head:
        raise ConversionError("The checkpoint has a classifier bias but no classifier.weight")
    head_size = int(head["weight"].shape[0])
    fresh_prefixes = ()
    if head_size in IMAGENET_HEAD_SIZES:
        labels = labels or "nih"
        notes.append(f"replaced the {head_size}-class ImageNet head by a new, untrained {labels} head")
        head, fresh_prefixes = {}, ("classifier.",)
        head_size = None
    config_options.update(classifier_label_options(head_size, labels))
    config = CXRDenseNetConfig.from_preset(preset, **config_options)
    converted = {f"densenet.{name}": value for name, value in backbone.items()}
    converted.update({f"classifier.{name}": value for name, value in head.items()})
    return ConvertedCheckpoint(DenseNetForChestXray, config, {**converted, **unknown}, fresh_prefixes, notes)


__all__ = ["block_config_of", "convert_densenet_state_dict", "is_densenet_state_dict"]
