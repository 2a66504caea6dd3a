"""Start a `TimmForChestXray` from a stock timm model: a Hub repository such as `timm/resnet50.a1_in1k` (its snapshot
in the Hub cache works offline) or a local directory in that layout (`config.json` with `architecture`, and
`model.safetensors` or `pytorch_model.bin`, as timm's `push_to_hf_hub` / `save_for_hf` and transformers'
`TimmWrapperForImageClassification.save_pretrained` write it). Package code, never copied into a model directory."""

from pathlib import Path
from typing import Any

import timm.models
from transformers import AutoConfig

from .configuration_cxr_timm import CXRTimmConfig
from .conversion_utils import ConversionError
from .modeling_cxr_timm import TimmForChestXray

# The weight files of a timm model directory, in the order they are looked for.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Keys of a stored `model_args` that the new model sets itself: the old head's size, and the regularisation the recipe
# chooses (`--drop_path`), which a stored value would otherwise override unseen.
_REPLACED_ARGS = ("num_classes", "drop_rate", "drop_path_rate")


def from_timm_wrapper(model_dir: str | Path, **fields: Any) -> TimmForChestXray:
    """The timm network in `model_dir` with its weights and a new head for the labels in `fields` (a
    `CXRTimmConfig`'s fields: `id2label`, `problem_type`, `image_size`, `drop_path_rate`, ...).

    Every weight but the old classifier's is copied (timm reads the file); a weight that does not fit, or one the new
    network lacks, is an error, not a silent re-draw.
    """
    model_dir = Path(model_dir)
    stock = AutoConfig.from_pretrained(model_dir)
    model_args = {key: value for key, value in (stock.model_args or {}).items() if key not in _REPLACED_ARGS}
    # The new network takes the 3 channels the image processor makes (a radiograph's gray replicated); weights stored
    # for another count (a 1-channel X-ray model) are adapted below, as timm adapts pretrained weights to in_chans.
    in_chans = int(model_args.pop("in_chans", 3))
    config = CXRTimmConfig(architecture=stock.architecture, model_args=model_args or None, **fields)
    model = TimmForChestXray(config)

    weights = next((model_dir / name for name in WEIGHT_FILES if (model_dir / name).is_file()), None)
    if weights is None:
        raise ConversionError(f"{model_dir}: no timm weights ({' or '.join(WEIGHT_FILES)})")
    # A transformers timm_wrapper save prefixes timm's own names with `timm_model.`.
    state = {name.removeprefix("timm_model."): tensor for name, tensor in timm.models.load_state_dict(weights).items()}
    if in_chans != model.config.num_channels:
        _adapt_first_convolution(state, model.timm_model, in_chans, model.config.num_channels, weights)
    head = _classifier_prefix(model.timm_model)
    body = {name: tensor for name, tensor in state.items() if not name.startswith(head)}
    try:
        missing, unexpected = model.timm_model.load_state_dict(body, strict=False)
    except RuntimeError as error:  # a shape mismatch
        raise ConversionError(f"{weights}: the weights do not fit timm's {stock.architecture}: {error}") from error
    not_head = [name for name in missing if not name.startswith(head)]
    if not_head or unexpected:
        raise ConversionError(
            f"{weights}: the weights do not fit timm's {stock.architecture} (missing: {not_head[:5]}, unexpected: "
            f"{list(unexpected)[:5]}); were they saved with other model_args?"
        )
    return model


def _adapt_first_convolution(state: dict, network, in_chans: int, channels: int, weights: Path) -> None:
    """The first convolution's weights (timm's `pretrained_cfg["first_conv"]`) adapted in place from `in_chans` to the
    network's `channels` with timm's `adapt_input_conv`: for 1 channel, repeated and scaled so that an image
    replicated into every channel gives the stored model's features."""
    first = network.pretrained_cfg.get("first_conv") or ()
    names = [f"{name}.weight" for name in ([first] if isinstance(first, str) else first)]
    found = [name for name in names if name in state]
    if not found:
        raise ConversionError(
            f"{weights}: stored for in_chans={in_chans}, and timm names no first convolution of "
            f"{type(network).__name__} to adapt to {channels} channels"
        )
    for name in found:
        try:
            state[name] = timm.models.adapt_input_conv(channels, state[name], base_chans=in_chans)
        except NotImplementedError as error:  # e.g. a linear patch embedding
            raise ConversionError(f"{weights}: {name} cannot be adapted from {in_chans} channels: {error}") from error


def _classifier_prefix(network) -> str:
    """`<name of the classifier>.`, the prefix of the weights the new head replaces."""
    classifier = network.get_classifier()
    name = next((name for name, module in network.named_modules() if module is classifier), None)
    if name is None:  # e.g. a distilled DeiT's (head, head_dist) pair
        raise ConversionError(
            f"timm's {type(network).__name__} has no single classifier module to replace ({type(classifier).__name__})"
        )
    return f"{name}."


__all__ = ["WEIGHT_FILES", "from_timm_wrapper"]
