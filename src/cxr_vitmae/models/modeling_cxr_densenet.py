"""DenseNet baselines (DenseNet-121/169/201) for chest X-ray classification, as transformers models.

The backbone is timm's DenseNet, whose `features.*` parameters have exactly the names and shapes of torchvision's
`densenet*().features`, so torchvision, timm and CheXNet-style checkpoints load under the single prefix `densenet.`
(plus `classifier.*` for the head).
"""

import math

import torch
from timm.models.densenet import DenseNet
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput

from .classification_loss import chest_xray_classification_loss
from .configuration_cxr_densenet import CXRDenseNetConfig
from .model_outputs import as_requested
from .saving import SavesImageProcessorMixin


class CXRDenseNetPreTrainedModel(SavesImageProcessorMixin, PreTrainedModel):
    """Base class of the DenseNet models: config class, weight initialisation and checkpoint conventions.

    Freshly built weights follow torchvision's DenseNet initialisation: Kaiming-normal convolutions, BatchNorm with
    weight 1 / bias 0 and reset running statistics, and `nn.Linear`'s own default weight init with a zero bias.
    """

    config_class = CXRDenseNetConfig
    config: CXRDenseNetConfig
    base_model_prefix = "densenet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["DenseBlock", "DenseTransition"]

    def _init_weights(self, module: nn.Module) -> None:
        # The `init.*` helpers skip tensors flagged as loaded, so `from_pretrained` only initialises missing weights.
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            # isinstance on the torch base also covers timm's BatchNormAct2d (a BatchNorm2d subclass).
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if module.running_mean is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
            if getattr(module, "num_batches_tracked", None) is not None:
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Linear):
            # torchvision keeps nn.Linear's default weight init; repeat it explicitly because a head created by
            # from_pretrained (new num_labels) is materialised from the meta device without it.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                init.zeros_(module.bias)


class CXRDenseNetModel(CXRDenseNetPreTrainedModel):
    """DenseNet backbone without a head.

    The output's `last_hidden_state` is the final feature map after `norm5` and ReLU, shape
    `(batch, num_features, height / 32, width / 32)`; `pooler_output` is its global average, `(batch, num_features)`.
    With `output_hidden_states=True`, `hidden_states` holds the stem output (after the max pool) and the output of
    every dense block (before its transition layer), i.e. `1 + len(config.block_config)` feature maps.
    """

    def __init__(self, config: CXRDenseNetConfig):
        super().__init__(config)
        backbone = DenseNet(
            growth_rate=config.growth_rate,
            block_config=tuple(config.block_config),
            num_classes=0,
            in_chans=config.num_channels,
            bn_size=config.bn_size,
            # timm's `drop_rate` is the pre-classifier dropout; torchvision's per-layer `drop_rate` is `proj_drop_rate`.
            proj_drop_rate=float(config.drop_rate),
            memory_efficient=config.memory_efficient,
        )
        # Only the feature extractor is kept, so the state dict is `features.*` as in torchvision and timm.
        # Its norm5 is BatchNormAct2d (BN + ReLU), which is torchvision's `norm5` followed by its functional ReLU.
        self.features = backbone.features
        self.num_features = backbone.num_features
        self.post_init()

    @property
    def gradient_checkpointing(self) -> bool:
        return any(getattr(m, "grad_checkpointing", False) for m in self.features.modules())

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enable: bool) -> None:
        # transformers' activation-checkpointing switch sets this attribute; timm's dense layers do the recomputation
        # themselves (use_reentrant=False), so the checkpoint function transformers passes along is not used.
        for module in self.features.modules():
            if hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = bool(enable)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple:
        """Run the backbone on `pixel_values` of shape `(batch, num_channels, height, width)`."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states

        hidden_states = () if output_hidden_states else None
        x = pixel_values
        for name, module in self.features.named_children():
            x = module(x)
            if output_hidden_states and (name == "pool0" or name.startswith("denseblock")):
                hidden_states += (x,)
        pooled = x.mean(dim=(2, 3))
        output = BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states
        )
        return as_requested(output, return_dict, self.config)


class DenseNetForChestXray(CXRDenseNetPreTrainedModel):
    """DenseNet with a linear classification head on the globally average-pooled features.

    This is torchvision's `densenet*(num_classes=config.num_labels)` (and the CheXNet baseline) with the same
    parameter names under the `densenet.` prefix. `config.problem_type` selects the loss: BCE with logits for
    `multi_label_classification` (NaN targets ignored), cross-entropy for `single_label_classification`.
    """

    def __init__(self, config: CXRDenseNetConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.densenet = CXRDenseNetModel(config)
        self.classifier = (
            nn.Linear(self.densenet.num_features, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        """Classify `pixel_values`; with `labels` ((batch, num_labels) multi-hot floats, NaN = unknown, or
        (batch,) class indices for single-label problems) also return the loss."""
        outputs = self.densenet(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(outputs.pooler_output)

        loss = None
        if labels is not None:
            loss = chest_xray_classification_loss(logits, labels.to(logits.device), self.config.problem_type)
        output = ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
        return as_requested(output, return_dict, self.config)


# Makes save_pretrained write `auto_map` and copy this file, the config file and their relative imports, so the
# saved directory loads with trust_remote_code=True without this package. The Auto classes themselves are
# registered by the package __init__.
CXRDenseNetConfig.register_for_auto_class()
CXRDenseNetModel.register_for_auto_class("AutoModel")
DenseNetForChestXray.register_for_auto_class("AutoModelForImageClassification")

__all__ = ["CXRDenseNetModel", "CXRDenseNetPreTrainedModel", "DenseNetForChestXray"]
