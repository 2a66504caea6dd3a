"""Configuration of any timm architecture as a chest X-ray classifier (`--model timm:resnet50`, `timm:convnext_tiny`,
`timm:efficientnet_b0`)."""

from typing import Any, Literal

import timm
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .chest_xray_labels import ChestXrayLabelsMixin

# `--model timm:ARCH` names a timm architecture (any name `timm.list_models()` gives, a pretrained tag allowed).
TIMM_PREFIX = "timm:"


@strict
class CXRTimmConfig(ChestXrayLabelsMixin, PreTrainedConfig):
    r"""Configuration of [`TimmForChestXray`]: a timm architecture by name, built with a head for the findings.

    Unlike transformers' `TimmWrapperConfig`, `config.json` keeps `id2label`, `label2id`, `problem_type` and the
    input size like every cxr-vitmae model, so cards, Grad-CAM and evaluation read it as they read the others.
    `cxr-vitmae export-native` writes the same network as a stock `timm_wrapper` model.

    Args:
        architecture (`str`, *optional*, defaults to `"resnet50"`):
            The timm model name (`timm.create_model`'s first argument), e.g. `resnet18`, `convnext_tiny`,
            `efficientnet_b0`.
        num_channels (`int`, *optional*, defaults to 3):
            Input channels (timm's `in_chans`; grayscale radiographs are replicated to 3 by the processor).
        drop_rate (`float`, *optional*, defaults to 0.0):
            Dropout before the classifier (timm's `drop_rate`), in `[0, 1)`.
        drop_path_rate (`float`, *optional*):
            Stochastic depth (timm's `drop_path_rate`), in `[0, 1)`; `None` or 0 passes nothing, so architectures
            without stochastic depth build (they refuse a positive rate).
        model_args (`dict`, *optional*):
            Further keyword arguments of `timm.create_model` (e.g. `{"stem_type": "deep"}`).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of a new head's weights (the rest keeps timm's initialisation or loaded weights).
        image_size (`int`, *optional*, defaults to 224):
            Nominal input resolution, which the image processor crops to.
        problem_type (`str`, *optional*, defaults to `"multi_label_classification"`):
            `"multi_label_classification"` (BCE with logits, NaN targets ignored), `"single_label_classification"`
            (cross-entropy) or `"regression"` (MSE).
        id2label / label2id (`dict`, *optional*):
            Label names; the 14 NIH ChestX-ray14 findings when neither they nor `num_labels` are given.

    Example:

    ```python
    >>> from cxr_vitmae import CXRTimmConfig, TimmForChestXray
    >>> model = TimmForChestXray(CXRTimmConfig.from_preset("timm:resnet18", image_size=256))
    ```
    """

    model_type = "cxr_timm"

    architecture: str = "resnet50"
    num_channels: int = 3
    drop_rate: float | int = 0.0
    drop_path_rate: float | int | None = None
    model_args: dict[str, Any] | None = None
    initializer_range: float = 0.02
    image_size: int = 224
    problem_type: Literal["regression", "single_label_classification", "multi_label_classification"] | None = (
        "multi_label_classification"
    )

    def validate_architecture(self):
        if not timm.is_model(self.architecture):
            close = timm.list_models(f"*{self.architecture.split('.')[0].split('_')[0]}*")[:8]
            hint = f"; similar names: {', '.join(close)}" if close else ""
            raise ValueError(f"architecture {self.architecture!r} is not a timm model (timm {timm.__version__}){hint}")
        pretrained = timm.models.get_pretrained_cfg(self.architecture)
        size = getattr(pretrained, "input_size", None)
        if getattr(pretrained, "fixed_input_size", False) and size and tuple(size[-2:]) != (self.image_size,) * 2:
            # timm builds such networks (ViT, Swin, ...) for one input size; the image processor crops to image_size.
            raise ValueError(
                f"timm's {self.architecture} takes only {size[-1]} px input, not image_size {self.image_size}: run it "
                f"at --image_size {size[-1]}"
            )

    def validate_drop_rate(self):
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")

    def validate_drop_path_rate(self):
        if self.drop_path_rate is not None and not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1) or None, got {self.drop_path_rate}")

    def validate_num_channels(self):
        if self.num_channels <= 0:
            raise ValueError(f"num_channels must be a positive integer, got {self.num_channels}")

    def timm_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `timm.create_model` (besides the name and `num_classes`) this config stands for."""
        kwargs: dict[str, Any] = {"in_chans": self.num_channels, "drop_rate": float(self.drop_rate)}
        if self.drop_path_rate:
            kwargs["drop_path_rate"] = float(self.drop_path_rate)
        return {**kwargs, **(self.model_args or {})}

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "CXRTimmConfig":
        """The config of `timm:ARCH` (e.g. `timm:resnet18`); keyword `overrides` set any field."""
        if not name.startswith(TIMM_PREFIX) or len(name) == len(TIMM_PREFIX):
            raise ValueError(f"a timm preset is named {TIMM_PREFIX}ARCH (e.g. timm:resnet50), got {name!r}")
        return cls(architecture=name[len(TIMM_PREFIX) :], **overrides)


__all__ = ["TIMM_PREFIX", "CXRTimmConfig"]
