"""Configuration of the DenseNet baselines (DenseNet-121/169/201) for chest X-ray classification."""

from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .chest_xray_labels import ChestXrayLabelsMixin

# torchvision's `densenet*` constructors; the paper's DenseNet-121 baseline is the default.
CXR_DENSENET_PRESETS: dict[str, dict[str, Any]] = {
    "densenet121": {"growth_rate": 32, "block_config": (6, 12, 24, 16), "num_init_features": 64},
    "densenet169": {"growth_rate": 32, "block_config": (6, 12, 32, 32), "num_init_features": 64},
    "densenet201": {"growth_rate": 32, "block_config": (6, 12, 48, 32), "num_init_features": 64},
}


@strict
class CXRDenseNetConfig(ChestXrayLabelsMixin, PreTrainedConfig):
    r"""Configuration of [`CXRDenseNetModel`] and [`DenseNetForChestXray`].

    The field names and meanings are those of `torchvision.models.DenseNet`, so a torchvision or timm DenseNet
    checkpoint maps onto the model one to one. The defaults build DenseNet-121 with a 14-label NIH ChestX-ray14 head.

    Args:
        growth_rate (`int`, *optional*, defaults to 32):
            Number of feature maps each dense layer adds (`k` in the DenseNet paper).
        block_config (`list[int]` or `tuple[int, ...]`, *optional*, defaults to `(6, 12, 24, 16)`):
            Number of dense layers in each dense block; a transition layer (1x1 conv halving the channels, 2x2
            average pool) sits between consecutive blocks.
        num_init_features (`int`, *optional*):
            Channels of the stem convolution. Defaults to `2 * growth_rate` (64 for the default), which is the only
            value the timm DenseNet backbone supports and what every torchvision DenseNet uses.
        bn_size (`int`, *optional*, defaults to 4):
            Bottleneck width multiplier: the 1x1 conv of each dense layer outputs `bn_size * growth_rate` channels.
        drop_rate (`float`, *optional*, defaults to 0.0):
            Dropout probability applied to the output of every dense layer (torchvision's `drop_rate`), in `[0, 1)`.
        memory_efficient (`bool`, *optional*, defaults to `False`):
            Recompute the bottleneck concatenations in the backward pass (gradient checkpointing) to save memory at
            the cost of speed. Can also be toggled later with `model.gradient_checkpointing_enable()`.
        num_channels (`int`, *optional*, defaults to 3):
            Number of input image channels (grayscale radiographs are replicated to 3 channels by the processor).
        image_size (`int`, *optional*, defaults to 224):
            Nominal input resolution. Informational only: the network is fully convolutional and global-average
            pooled, so it accepts any size that survives the five 2x downsamplings.
        problem_type (`str`, *optional*, defaults to `"multi_label_classification"`):
            Chooses the classification loss: `"multi_label_classification"` (BCE with logits, NaN targets ignored),
            `"single_label_classification"` (cross-entropy) or `"regression"` (MSE).
        id2label / label2id (`dict`, *optional*):
            Label names. When neither `id2label` nor `num_labels` is given they default to the 14 NIH ChestX-ray14
            findings in the official order; `label2id` is always kept consistent with `id2label`.

    Example:

    ```python
    >>> from cxr_vitmae import CXRDenseNetConfig, DenseNetForChestXray
    >>> config = CXRDenseNetConfig.from_preset("densenet121")
    >>> model = DenseNetForChestXray(config)
    ```
    """

    model_type = "cxr_densenet"

    growth_rate: int = 32
    block_config: list[int] | tuple[int, ...] = (6, 12, 24, 16)
    num_init_features: int | None = None
    bn_size: int = 4
    drop_rate: float | int = 0.0
    memory_efficient: bool = False
    num_channels: int = 3
    image_size: int = 224
    problem_type: Literal["regression", "single_label_classification", "multi_label_classification"] | None = (
        "multi_label_classification"
    )

    def __post_init__(self, **kwargs):
        if self.num_init_features is None:
            self.num_init_features = 2 * self.growth_rate
        super().__post_init__(**kwargs)

    def validate_growth_rate(self):
        if self.growth_rate <= 0:
            raise ValueError(f"growth_rate must be a positive integer, got {self.growth_rate}")

    def validate_block_config(self):
        if len(self.block_config) == 0 or any(
            not isinstance(n, int) or isinstance(n, bool) or n <= 0 for n in self.block_config
        ):
            raise ValueError(f"block_config must be a non-empty sequence of positive integers, got {self.block_config}")

    def validate_num_init_features(self):
        # timm's DenseNet hard-wires the stem width to 2 * growth_rate.
        if self.num_init_features != 2 * self.growth_rate:
            raise ValueError(
                f"num_init_features must equal 2 * growth_rate ({2 * self.growth_rate}), got {self.num_init_features}"
            )

    def validate_bn_size(self):
        if self.bn_size <= 0:
            raise ValueError(f"bn_size must be a positive integer, got {self.bn_size}")

    def validate_drop_rate(self):
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")

    def validate_num_channels(self):
        if self.num_channels <= 0:
            raise ValueError(f"num_channels must be a positive integer, got {self.num_channels}")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "CXRDenseNetConfig":
        """Build the config of a named DenseNet variant; keyword `overrides` replace any preset or default field.

        Valid names are the keys of `CXR_DENSENET_PRESETS`: `densenet121`, `densenet169`, `densenet201`.
        """
        if name not in CXR_DENSENET_PRESETS:
            raise ValueError(
                f"Unknown DenseNet preset {name!r}; valid presets are: {', '.join(sorted(CXR_DENSENET_PRESETS))}"
            )
        preset = dict(CXR_DENSENET_PRESETS[name])
        if "growth_rate" in overrides and "num_init_features" not in overrides:
            # Let the stem width follow an overridden growth rate instead of failing validation.
            del preset["num_init_features"]
        return cls(**{**preset, **overrides})


__all__ = ["CXR_DENSENET_PRESETS", "CXRDenseNetConfig"]
