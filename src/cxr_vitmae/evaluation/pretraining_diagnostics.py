"""What MAE pre-training has learned so far, measured cheaply while it runs (the recipe's per-epoch diagnostics).

Two questions, each answered against a reference that learns nothing, so that a number means something on its own:

- Does the MAE reconstruct held-out images better than trivial predictors? `reconstruction_baselines` scores the
  MAE's masked-patch loss next to two predictors of every masked patch, on the same masks: the mean of the image's
  own visible pixels, and the training set's mean image (`mean_training_image`). On the reproduction study's MAE
  (issue 27): 0.0738, against 0.0880 for the mean image, 1.11 for the visible-pixel mean and 1.88 for a randomly
  initialised MAE.
- Do the encoder's features carry the labels? `probe_encoder` fits a k-NN (or logistic-regression) probe on the
  pooled features of labelled training images and scores it by mean AUROC on validation images, to be read against
  the same probe on a randomly initialised encoder of the same configuration (`random_encoder`), which already
  scores above chance where findings change the pixel statistics (about 0.6 on the phantoms). `probe_difference`
  gives the encoder's probe minus the random encoder's with a paired patient-bootstrap CI (both probes scored on each
  draw of patients), which shows a difference that the two probes' own intervals, overlapping, would hide.

Every forward pass runs in eval mode under `torch.inference_mode` and puts the model back in the mode it was in;
nothing here draws from the process's random generators (masks come in as `noise`; the random encoder is built
under a forked generator), so a training run's randomness is the same with or without these measurements.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import datasets
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..data.transforms import evaluation_transform
from ..models import CXRViTMAEConfig, CXRViTMAEForPreTraining, CXRViTMAEModel
from ..training.data import TransformedCorpus, make_loader
from .comparison import paired_auroc_difference
from .metrics import MULTI_LABEL, SINGLE_LABEL, classification_metrics

__all__ = [
    "encoder_features",
    "evaluation_pixels",
    "mean_training_image",
    "probe_difference",
    "probe_encoder",
    "probe_features",
    "random_encoder",
    "reconstruction_baselines",
]

PROBE_METHODS = ("knn", "logistic")
# The small variance floor of CXRViTMAEForPreTraining's per-patch normalisation (`norm_pix_loss`).
_NORM_PIX_EPS = 1.0e-6


# --------------------------------------------------------------------------------------------------------------
# Images


def evaluation_pixels(
    split: datasets.Dataset, image_size: int, *, seed: int, num_workers: int = 0, batch_size: int = 64
) -> torch.Tensor:
    """Every image of `split` through the evaluation transform (resize, center crop, normalise), as one (N, C, H, W)
    float tensor on the CPU, in the split's order."""
    corpus = TransformedCorpus(split, evaluation_transform(image_size), seed=seed, label_key=None)
    loader = make_loader(corpus, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    batches = [batch["pixel_values"] for batch in loader]
    # Grayscale batches arrive as three-channel views of one channel; kept that way, the images held between
    # epochs take a third of the memory (200 MB for a thousand at 224 px).
    if all(batch.stride(1) == 0 for batch in batches):
        return torch.cat([batch[:, :1] for batch in batches]).expand(-1, batches[0].shape[1], -1, -1)
    return torch.cat(batches)


def mean_training_image(
    split: datasets.Dataset, image_size: int, n_images: int, *, seed: int, num_workers: int = 0, batch_size: int = 64
) -> torch.Tensor:
    """The mean (C, H, W) image of up to `n_images` images of `split` drawn without replacement by `seed`, through
    the evaluation transform: the "training set's mean image" predictor of `reconstruction_baselines`. Summed batch
    by batch, so the sample is never held whole."""
    chosen = np.sort(np.random.default_rng(seed).permutation(len(split))[: min(n_images, len(split))])
    corpus = TransformedCorpus(split.select(chosen), evaluation_transform(image_size), seed=seed, label_key=None)
    total = None
    for batch in make_loader(corpus, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        pixels = batch["pixel_values"].double().sum(dim=0)
        total = pixels if total is None else total + pixels
    return (total / len(chosen)).float()


@contextmanager
def _evaluating(model: torch.nn.Module) -> Iterator[None]:
    """`model` in eval mode (no drop path or dropout) for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------------------------------
# Reconstruction against trivial predictors


def _normalised_patches(patches: torch.Tensor) -> torch.Tensor:
    """Each patch minus its mean over its pixels, over its standard deviation: the `norm_pix_loss` target, written
    as `CXRViTMAEForPreTraining.forward` writes it (unbiased variance, the same floor)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + _NORM_PIX_EPS) ** 0.5


@torch.inference_mode()
def reconstruction_baselines(
    model: CXRViTMAEForPreTraining,
    pixel_values: torch.Tensor,
    noise: torch.Tensor,
    mean_image: torch.Tensor,
    *,
    batch_size: int = 64,
) -> dict[str, float]:
    """The masked-patch loss of three predictors on the same masks, in the model's own target space.

    - `mae`: the model's loss, from its own forward pass (so precision and `norm_pix_loss` are the training's);
    - `visible_mean`: every masked patch predicted as the mean of the image's visible pixels (per channel);
    - `mean_image`: every masked patch predicted as the same patch of `mean_image`.

    With `norm_pix_loss` the targets are per-patch normalised and so are the two trivial predictions (a patch of one
    value normalises to zeros). Each value averages as the model's loss does: the per-patch mean squared error,
    averaged over all masked patches of all images (batching changes nothing: every image hides as many patches).

    Args:
        model: the MAE (the bare module; its forward may carry Accelerate's autocast wrapper).
        pixel_values: (N, C, H, W) normalised held-out images, on any device.
        noise: (N, num_patches) masking noise (the lowest `1 - mask_ratio` of each row stay visible), fixed by the
            caller so that every call, epoch after epoch, hides the same patches.
        mean_image: (C, H, W) normalised mean training image (see `mean_training_image`).
        batch_size: images per forward pass.
    """
    device = next(model.parameters()).device
    mean_patches = model.patchify(mean_image[None].to(device, torch.float32))
    totals = {"mae": 0.0, "visible_mean": 0.0, "mean_image": 0.0}
    n_masked = 0.0
    with _evaluating(model):
        for start in range(0, len(pixel_values), batch_size):
            pixels = pixel_values[start : start + batch_size].to(device, torch.float32)
            output = model(pixels, noise=noise[start : start + batch_size].to(device))
            mask = output.mask.float()
            masked = float(mask.sum())
            totals["mae"] += float(output.loss) * masked
            target = model.patchify(pixels)
            # Patchify orders a patch's values (p, q, c): channels are the last, fastest axis.
            by_channel = target.unflatten(-1, (-1, model.config.num_channels))
            visible = (1.0 - mask)[..., None, None]
            channel_mean = (by_channel * visible).sum(dim=(1, 2)) / (visible.sum(dim=(1, 2)) * by_channel.shape[2])
            predictions = {
                "visible_mean": channel_mean[:, None, None, :].expand_as(by_channel).flatten(-2),
                "mean_image": mean_patches.expand_as(target),
            }
            if model.config.norm_pix_loss:
                target = _normalised_patches(target)
                predictions = {name: _normalised_patches(value) for name, value in predictions.items()}
            for name, prediction in predictions.items():
                totals[name] += float((((prediction - target) ** 2).mean(dim=-1) * mask).sum())
            n_masked += masked
    return {name: total / n_masked for name, total in totals.items()}


# --------------------------------------------------------------------------------------------------------------
# Probes of the encoder's features


def random_encoder(config: CXRViTMAEConfig, seed: int = 0) -> CXRViTMAEModel:
    """A randomly initialised encoder of `config` (MAE's initialisation, the final LayerNorm kept as in the MAE's
    encoder), in eval mode on the CPU: the probe's baseline. Built under a forked CPU generator seeded with `seed`,
    so it is the same encoder every time and the caller's random stream is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CXRViTMAEModel(config).eval()


@torch.inference_mode()
def encoder_features(model: torch.nn.Module, pixel_values: torch.Tensor, *, batch_size: int = 64) -> np.ndarray:
    """(N, hidden_size) float32 features: the mean of the encoder's patch tokens (CLS left out, as the paper's
    fine-tuning pools) over every patch, unmasked and in order (no noise is passed, so nothing is shuffled).

    `model` is a `CXRViTMAEModel` or any model holding one as `.vit` (the MAE, the classifier); it is called
    directly, so an autocast wrapper on the outer model's forward does not apply and features are float32."""
    encoder = getattr(model, "vit", model)
    device = next(encoder.parameters()).device
    features = []
    with _evaluating(encoder):
        for start in range(0, len(pixel_values), batch_size):
            pixels = pixel_values[start : start + batch_size].to(device, torch.float32)
            tokens = encoder(pixels, return_dict=True).last_hidden_state
            features.append(tokens[:, 1:].mean(dim=1).float().cpu())
    return torch.cat(features).numpy()


def _probe(method: str, k: int, n_train: int):
    """A fresh scikit-learn classifier for one probe fit: k-NN on cosine distance (score = share of the k nearest
    training images with the label), or L2 logistic regression on standardised features."""
    if method == "knn":
        return KNeighborsClassifier(n_neighbors=min(k, n_train), metric="cosine", algorithm="brute")
    if method == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    raise ValueError(f"probe method must be one of {PROBE_METHODS}, got {method!r}")


def _positive_scores(method: str, k: int, features: np.ndarray, targets: np.ndarray, queries: np.ndarray):
    """One binary label's scores for `queries`, from the training rows whose label is known (NaN rows left out).
    A label with one known value (or none) gets that value's training share as a constant score: no ranking."""
    known = ~np.isnan(targets)
    y = targets[known].astype(int)
    if np.unique(y).size < 2:
        return np.full(len(queries), float(y.mean()) if y.size else 0.5)
    probe = _probe(method, k, int(known.sum())).fit(features[known], y)
    return probe.predict_proba(queries)[:, list(probe.classes_).index(1)]


def probe_features(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    *,
    label_names: Sequence[str],
    eval_patient_ids: Sequence | None = None,
    method: str = "knn",
    k: int = 20,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> dict:
    """Fit a probe on (`train_features`, `train_labels`) and score it on the eval images.

    Multi-label labels ((N, C), NaN = unknown) get one probe per label, each fitted on the images whose label is
    known; single-label labels ((N,) class indices) get one multi-class probe. The eval metrics come from
    `classification_metrics` (NaN eval labels left out per class), with a patient-level bootstrap CI of the mean
    AUROC when `eval_patient_ids` and `n_bootstrap` are given: it covers the choice of eval images only, not of the
    probe's training images.

    Returns:
        `{"method", "k", "n_train", "n_eval", "mean_auroc", "mean_auroc_ci95", "per_class_auroc", "scores"}` (k is
        None for the logistic probe; a mean or class AUROC is None where no eval class has both label values;
        `scores`, (n_eval, classes), are the probe's scores of the eval images, for `probe_difference`).
    """
    train_features = np.asarray(train_features, dtype=np.float64)
    eval_features = np.asarray(eval_features, dtype=np.float64)
    train_labels, eval_labels = np.asarray(train_labels), np.asarray(eval_labels)
    if method not in PROBE_METHODS:
        raise ValueError(f"probe method must be one of {PROBE_METHODS}, got {method!r}")
    if train_labels.ndim == 1:
        problem = SINGLE_LABEL
        probe = _probe(method, k, len(train_labels)).fit(train_features, train_labels.astype(int))
        scores = np.zeros((len(eval_features), len(label_names)))
        scores[:, probe.classes_] = probe.predict_proba(eval_features)
    else:
        problem = MULTI_LABEL
        columns = [
            _positive_scores(method, k, train_features, train_labels[:, c].astype(np.float64), eval_features)
            for c in range(train_labels.shape[1])
        ]
        scores = np.stack(columns, axis=1)
    metrics = classification_metrics(
        scores,
        eval_labels,
        label_names=label_names,
        patient_ids=eval_patient_ids,
        problem_type=problem,
        n_bootstrap=n_bootstrap if eval_patient_ids is not None else 0,
        seed=seed,
    )
    return {
        "method": method,
        "k": k if method == "knn" else None,
        "n_train": int(len(train_features)),
        "n_eval": int(len(eval_features)),
        "mean_auroc": metrics["mean_auroc"],
        "mean_auroc_ci95": metrics["mean_auroc_ci95"],
        "per_class_auroc": {name: values["auroc"] for name, values in metrics["per_class"].items()},
        "scores": scores,
    }


def probe_difference(
    probe: dict, baseline: dict, eval_labels: np.ndarray, eval_patient_ids: Sequence, *, n_bootstrap: int, seed: int
) -> dict:
    """The mean AUROC of `probe` minus `baseline`'s, two `probe_features` results on the same eval images, with a
    paired patient-level bootstrap interval (`comparison.paired_auroc_difference`: each resample scores both probes
    on the same draw of patients). Single-label class indices are scored one class against the rest.

    Returns:
        `{"difference", "difference_ci95", "p_value"}` (p one-sided, H0: the probe is no better than the baseline;
        all None where no eval class has both label values; where no resample has one, the interval is None and p
        is 1.0).
    """
    if probe["mean_auroc"] is None or baseline["mean_auroc"] is None:
        return {"difference": None, "difference_ci95": None, "p_value": None}
    labels = np.asarray(eval_labels, dtype=np.float64)
    if labels.ndim == 1:
        labels = np.eye(probe["scores"].shape[1])[labels.astype(int)]

    def run(scores: np.ndarray) -> dict[str, np.ndarray]:
        return {"scores": scores, "labels": labels, "image_id": np.arange(len(labels)),
                "patient_id": np.asarray(eval_patient_ids)}  # fmt: skip

    result = paired_auroc_difference(
        [run(probe["scores"])], [run(baseline["scores"])], n_bootstrap=n_bootstrap, seed=seed
    )
    return {key: result[key] for key in ("difference", "difference_ci95", "p_value")}


def probe_encoder(
    encoder_or_model: torch.nn.Module,
    train_pixels: torch.Tensor,
    train_labels: np.ndarray,
    eval_pixels: torch.Tensor,
    eval_labels: np.ndarray,
    *,
    batch_size: int = 64,
    **probe_options,
) -> dict:
    """`probe_features` on the `encoder_features` of the train and eval images (the options are its keywords:
    `label_names` is required)."""
    return probe_features(
        encoder_features(encoder_or_model, train_pixels, batch_size=batch_size),
        train_labels,
        encoder_features(encoder_or_model, eval_pixels, batch_size=batch_size),
        eval_labels,
        **probe_options,
    )
