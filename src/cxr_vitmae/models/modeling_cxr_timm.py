"""Any timm architecture as a chest X-ray classifier, in the transformers Auto API.

The network is `timm.create_model(config.architecture, num_classes=config.num_labels, ...)` under the attribute
`timm_model`, exactly as transformers' `TimmWrapperForImageClassification` holds it, so the state dict is the stock
wrapper's and `export-native` only rewrites `config.json`. What this class adds over the stock wrapper: the
multi-label loss that ignores unknown (NaN) labels, timm's own weight initialisation for a fresh model (the stock
wrapper re-draws every convolution from N(0, 0.02)), and the cxr-vitmae image processor and remote code in every
saved directory.
"""

import timm
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput

from .classification_loss import chest_xray_classification_loss
from .configuration_cxr_timm import CXRTimmConfig
from .model_outputs import as_requested
from .saving import SavesImageProcessorMixin


class TimmForChestXray(SavesImageProcessorMixin, PreTrainedModel):
    """A timm network with a `config.num_labels` head for thorax findings.

    `config.problem_type` selects the loss: BCE with logits for `multi_label_classification` (NaN targets ignored),
    cross-entropy for `single_label_classification`. With `output_hidden_states=True` the output's `hidden_states`
    holds one tensor, the network's last feature map (`forward_features`, before pooling).
    """

    config_class = CXRTimmConfig
    config: CXRTimmConfig
    base_model_prefix = "timm_model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    # timm models are not split across devices.
    _no_split_modules = ["TimmForChestXray"]

    def __init__(self, config: CXRTimmConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.timm_model = timm.create_model(
            config.architecture, pretrained=False, num_classes=config.num_labels, **config.timm_kwargs()
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Only the head is drawn here, as transformers draws a new classifier (N(0, initializer_range), zero bias):
        # timm has initialised the rest its own way when the model was built, and from_pretrained loads it.
        if module is self.timm_model.get_classifier() and isinstance(module, (nn.Linear, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        # Buffers a checkpoint does not hold (e.g. relative-position indices) are rebuilt, as the stock wrapper does.
        if hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs) -> None:
        # Most timm networks implement it; the others assert in `set_grad_checkpointing` (e.g. cspnet, dla, coat).
        try:
            self.timm_model.set_grad_checkpointing(enable)
        except AssertionError as error:
            raise ValueError(
                f"timm:{self.config.architecture} does not support gradient checkpointing ({error})"
            ) from error

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        """Classify `pixel_values` of shape `(batch, num_channels, height, width)`; with `labels` ((batch, num_labels)
        multi-hot floats, NaN = unknown, or (batch,) class indices for single-label problems) also return the loss."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        features = self.timm_model.forward_features(pixel_values)
        logits = self.timm_model.forward_head(features)

        loss = None
        if labels is not None:
            loss = chest_xray_classification_loss(logits, labels.to(logits.device), self.config.problem_type)
        hidden_states = (features,) if output_hidden_states else None
        output = ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)
        return as_requested(output, return_dict, self.config)


# Makes save_pretrained write `auto_map` and copy this file, the config file and their relative imports, so the
# saved directory loads with trust_remote_code=True without this package (timm needed).
CXRTimmConfig.register_for_auto_class()
TimmForChestXray.register_for_auto_class("AutoModelForImageClassification")

__all__ = ["TimmForChestXray"]
