"""A model family the package does not ship: a three-layer CNN with its config and classifier (its "model files") and
the one registry entry that makes the recipes, cards and Grad-CAM take it. Importing this module registers it, in
the registry and in the transformers Auto API."""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import ImageClassifierOutput

from cxr_vitmae.model_families import ModelFamily, register_family
from cxr_vitmae.models import CXRImageProcessor
from cxr_vitmae.models.classification_loss import chest_xray_classification_loss
from cxr_vitmae.models.saving import SavesImageProcessorMixin

PRESETS = {"tinycnn-s": {"width": 8}, "tinycnn-m": {"width": 16}}
CARD_TEMPLATE = Path(__file__).with_name("extra_family_card.md")


@dataclass
class TinyCNNConfig(PretrainedConfig):
    model_type = "cxr_test_tinycnn"

    width: int = 8
    num_channels: int = 3
    image_size: int = 32

    @classmethod
    def from_preset(cls, name: str, **fields) -> "TinyCNNConfig":
        return cls(**{**PRESETS[name], **fields})


class TinyCNNForChestXray(SavesImageProcessorMixin, PreTrainedModel):
    config_class = TinyCNNConfig
    main_input_name = "pixel_values"

    def __init__(self, config: TinyCNNConfig):
        super().__init__(config)
        width = config.width
        self.features = nn.Sequential(
            nn.Conv2d(config.num_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.classifier = nn.Linear(2 * width, config.num_labels)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **_) -> ImageClassifierOutput:
        logits = self.classifier(self.features(pixel_values).mean(dim=(2, 3)))
        loss = None if labels is None else chest_xray_classification_loss(logits, labels, self.config.problem_type)
        return ImageClassifierOutput(loss=loss, logits=logits)


def gradcam_target(model: TinyCNNForChestXray):
    return model.features[-2], None  # the last convolution


def describe(kind: str, config: dict) -> dict[str, str]:
    return {"shape": f"TinyCNN, width {config['width']}", "family": "TinyCNN", "features": "a feature map"}


AutoConfig.register(TinyCNNConfig.model_type, TinyCNNConfig, exist_ok=True)
AutoImageProcessor.register(TinyCNNConfig, image_processor_classes={"torchvision": CXRImageProcessor}, exist_ok=True)
AutoModelForImageClassification.register(TinyCNNConfig, TinyCNNForChestXray, exist_ok=True)
FAMILY = register_family(
    ModelFamily(
        name="tinycnn",
        model_type=TinyCNNConfig.model_type,
        display_name="TinyCNN",
        config_class=TinyCNNConfig,
        classifier="extra_family:TinyCNNForChestXray",
        presets=tuple(PRESETS),
        gradcam_target="extra_family:gradcam_target",
        describe="extra_family:describe",
        card_template=str(CARD_TEMPLATE),
        card_tags=("tinycnn", "cnn"),
        paper_results="none",
    )
)
