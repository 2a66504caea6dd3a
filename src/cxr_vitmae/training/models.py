"""The model a recipe starts from: a preset (from scratch), a pre-training directory or a converted checkpoint."""

from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoModelForImageClassification, PreTrainedModel

from ..models import (
    CXRDenseNetConfig,
    CXRViTMAEConfig,
    CXRViTMAEForPreTraining,
    DenseNetForChestXray,
    ViTMAEForChestXray,
)
from ..models.configuration_cxr_densenet import CXR_DENSENET_PRESETS
from ..models.configuration_cxr_vitmae import VIT_PRESETS


def build_classifier(
    model: str,
    *,
    label_names: list[str],
    single_label: bool,
    image_size: int,
    drop_path: float,
    overrides: dict[str, Any],
) -> PreTrainedModel:
    """A classifier for `label_names`: a new one from a preset name, or one loaded from a model directory (a
    pre-training directory keeps its encoder and gets a new head; a classifier with other labels gets a new head)."""
    labels = {
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: index for index, name in enumerate(label_names)},
        "problem_type": "single_label_classification" if single_label else "multi_label_classification",
    }
    if model in VIT_PRESETS:
        config = CXRViTMAEConfig.from_preset(
            model, image_size=image_size, drop_path_rate=drop_path, **labels, **overrides
        )
        return ViTMAEForChestXray(config)
    if model in CXR_DENSENET_PRESETS:
        return DenseNetForChestXray(CXRDenseNetConfig.from_preset(model, image_size=image_size, **labels, **overrides))
    if not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(
            f"--model {model}: neither a preset ({', '.join([*VIT_PRESETS, *CXR_DENSENET_PRESETS])}) nor a model "
            "directory with a config.json"
        )
    extra = {"drop_path_rate": drop_path} if AutoConfig.from_pretrained(model).model_type == "cxr_vitmae" else {}
    return AutoModelForImageClassification.from_pretrained(
        model, ignore_mismatched_sizes=True, **labels, **extra, **overrides
    )


def build_pretraining_model(
    model: str, *, image_size: int, mask_ratio: float, norm_pix_loss: bool, overrides: dict[str, Any]
) -> CXRViTMAEForPreTraining:
    """An MAE from a ViT preset, or continued from a pre-training directory (e.g. a converted ImageNet MAE)."""
    objective = {"mask_ratio": mask_ratio, "norm_pix_loss": norm_pix_loss}
    if model in VIT_PRESETS:
        return CXRViTMAEForPreTraining(
            CXRViTMAEConfig.from_preset(model, image_size=image_size, **objective, **overrides)
        )
    if not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(f"--model {model}: neither a ViT preset ({', '.join(VIT_PRESETS)}) nor a directory")
    return CXRViTMAEForPreTraining.from_pretrained(model, **objective, **overrides)
