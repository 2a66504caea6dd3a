"""Scores for every image of a split, gathered across processes exactly once each, and their file."""

from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator


@torch.no_grad()
def predict(accelerator: Accelerator, model: torch.nn.Module, loader) -> dict[str, np.ndarray]:
    """`scores` (N, C) probabilities (sigmoid for multi-label, softmax otherwise), `labels` and the dataset `index` of
    each row, in the order of the dataset. `gather_for_metrics` drops the samples that distributed loading repeats
    to even out the last batch, so every image is counted once. The model is left in the mode it came in."""
    was_training = model.training
    model.eval()
    problem_type = accelerator.unwrap_model(model).config.problem_type
    scores, labels, indices = [], [], []
    for batch in loader:
        logits = model(pixel_values=batch["pixel_values"]).logits.float()
        probabilities = torch.sigmoid(logits) if problem_type == "multi_label_classification" else logits.softmax(-1)
        gathered = accelerator.gather_for_metrics((probabilities, batch["labels"], batch["index"]))
        for store, value in zip((scores, labels, indices), gathered, strict=True):
            store.append(value.cpu())
    model.train(was_training)
    order = torch.cat(indices).argsort()
    return {
        "scores": torch.cat(scores)[order].numpy(),
        "labels": torch.cat(labels)[order].numpy(),
        "index": torch.cat(indices)[order].numpy(),
    }


PREDICTIONS_FILE = "test_predictions.npz"


def save_predictions(path, prediction: dict[str, np.ndarray], examples) -> None:
    """`prediction` (from `predict`) with each row's `image_id` and `patient_id` from `examples` (the split it was
    made on), as an .npz written then renamed: what a paired comparison of two models on the same images reads."""
    rows = examples.select_columns(["image_id", "patient_id"]).select(prediction["index"].tolist())
    path = Path(path)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez_compressed(
        partial,
        scores=prediction["scores"],
        labels=prediction["labels"],
        image_id=np.asarray(rows["image_id"], dtype=str),
        patient_id=np.asarray(rows["patient_id"], dtype=str),
    )
    partial.replace(path)


def load_predictions(path) -> dict[str, np.ndarray]:
    """What `save_predictions` wrote: `scores`, `labels`, `image_id`, `patient_id`."""
    with np.load(path) as stored:
        return {key: stored[key] for key in ("scores", "labels", "image_id", "patient_id")}
