"""Label probabilities for image files from a saved cxr-vitmae (or any transformers image-classification) model.

This module scores images already in memory (`predict_images`, what the demo app and the tests call); `batch_predict`
streams files from disk through the same `score_pixels`, which is what `cxr-vitmae predict` runs."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

from .errors import InputError
from .model_directory import model_directory
from .models import CXRImageProcessor, load_radiograph
from .models.pipeline_cxr import processor_input


def load_classifier(model_dir: str | Path, device: str | torch.device = "cpu"):
    """The classifier and its image processor from `model_dir`, in eval mode on `device`.

    The saved architecture is checked first: a pre-training checkpoint or a bare backbone would load into the
    classifier class with a freshly initialised head, and its predictions and maps would mean nothing.

    `model_dir` may also be a Hub repository id (see `model_directory`).

    Raises:
        InputError: `model_dir` is no model directory or Hub model, or holds another kind of model.
    """
    model_dir = model_directory(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    saved_as = config.architectures or []
    classifier = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING.get(type(config), None)
    if classifier is None or (saved_as and classifier.__name__ not in saved_as):
        raise InputError(
            f"{model_dir} holds a {' / '.join(saved_as) or config.model_type} model, not an image classifier "
            "(its classification head would be random): pass a fine-tuned classifier directory"
        )
    model = AutoModelForImageClassification.from_pretrained(model_dir).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    return model, processor


def scores_from_logits(logits: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    """Probabilities: independent sigmoids for multi-label models, a softmax over classes otherwise."""
    if problem_type == "multi_label_classification":
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=-1)


def decode_images(images: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """Every image decoded up front, so an unreadable file fails fast, by name, before any model work."""
    return {str(image): load_radiograph(image) for image in images}


@torch.inference_mode()
def score_pixels(model, pixel_values: torch.Tensor) -> list[dict[str, float]]:
    """`{label: probability}` per image of a processed batch (`pixel_values` as the model's processor returns them),
    rounded to 6 decimals: the one place the CLI's JSON, its output files and `predict_images` get their numbers."""
    device = next(model.parameters()).device
    logits = model(pixel_values=pixel_values.to(device)).logits.float()
    probabilities = scores_from_logits(logits, model.config.problem_type).cpu()
    labels = [model.config.id2label[i] for i in range(probabilities.shape[-1])]
    return [dict(zip(labels, (round(p, 6) for p in row.tolist()), strict=True)) for row in probabilities]


def predict_images(model, processor, images: dict[str, np.ndarray], batch_size: int = 8) -> dict[str, dict[str, float]]:
    """`{name: {label: probability}}` for decoded `images` (see `decode_images`), in the order given.

    For a stock processor (a native export) each name that is a file is also checked with
    `export_native.warn_if_saturated`: these scores come from the rescaled image, but transformers' pipeline and the
    Hub widget would clip a 16-bit file at 255, so the user is warned that those routes disagree."""
    names = list(images)
    if not isinstance(processor, CXRImageProcessor):
        from .hub.export_native import warn_if_saturated

        for name in names:
            if Path(name).is_file():
                warn_if_saturated(name)
    results: dict[str, dict[str, float]] = {}
    for start in range(0, len(names), batch_size):
        batch_names = names[start : start + batch_size]
        batch = processor([processor_input(processor, images[name]) for name in batch_names], return_tensors="pt")
        results.update(zip(batch_names, score_pixels(model, batch["pixel_values"]), strict=True))
    return results
