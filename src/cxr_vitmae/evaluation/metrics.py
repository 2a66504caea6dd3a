"""Classification metrics for chest X-ray evaluation, with patient-level bootstrap confidence intervals.

Point estimates come from scikit-learn. The bootstrap reweights images by how many times their patient was drawn,
which is the same as concatenating the drawn patients' images, and computes AUROC / average precision from those
integer weights with prefix sums over the score order, for many resamples at once (`_ClassData.bootstrap`), because
calling scikit-learn 14 000 times is too slow for a 25k-image test set.

Rules that differ from the original medical_mae code, on purpose:
- a label that is NaN is unknown, and that image is left out of that class only;
- a class with a single label value among its known rows has no AUROC/AUPRC: it is `None` and listed under
  `undefined`, and it is left out of the means (the original code stored 0);
- a bootstrap resample in which a class has a single label value is skipped for that class, and for the means, so
  that every mean in the CI averages the same set of classes as the point estimate. `bootstrap.n_used` says how many
  resamples each interval rests on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

__all__ = ["classification_metrics", "roc_curves"]

MULTI_LABEL = "multi_label_classification"
SINGLE_LABEL = "single_label_classification"

# Resamples are processed in blocks of this many; fixed so that a seed gives the same draws on every machine.
_BLOCK = 64


def classification_metrics(
    scores,
    labels,
    *,
    label_names: Sequence[str],
    patient_ids: Sequence | None,
    problem_type: str = MULTI_LABEL,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Per-class and mean AUROC / AUPRC (and top-1 accuracy for single-label problems) with bootstrap CIs.

    Args:
        scores: (N, C) probabilities: sigmoid outputs for multi-label, softmax outputs for single-label problems.
        labels: multi-label: (N, C) multi-hot floats, NaN = unknown. Single-label: (N,) integer class indices; the
            per-class metrics are then one-vs-rest.
        label_names: the C class names, in column order.
        patient_ids: (N,) patient of each image; the bootstrap resamples patients. `None` resamples images, which
            is only right when every image comes from a different patient; the output records which was used.
        problem_type: `"multi_label_classification"` or `"single_label_classification"` (transformers' names).
        n_bootstrap: number of resamples; 0 gives no intervals (all CIs `None`).
        seed: seed of the resampling; equal inputs and seed give equal output.
        confidence: coverage of the percentile intervals.

    Returns:
        A JSON-serialisable dict: `n_images`, `mean_auroc`, `mean_auroc_ci95`, `mean_auprc`, `mean_auprc_ci95`,
        `accuracy`, `accuracy_ci95`, `per_class` ({name: {auroc, auprc, n_pos, n_neg, auroc_ci95, auprc_ci95}}),
        `undefined` (classes without AUROC) and `bootstrap` (how the intervals were made). Missing values are None.
    """
    scores = np.asarray(scores, dtype=np.float64)
    names = [str(name) for name in label_names]
    targets, class_labels = _check_inputs(scores, labels, names, problem_type)
    n_images, n_classes = scores.shape
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")

    if patient_ids is None:
        unit, patient_index = "image", np.arange(n_images)
    else:
        patient_ids = np.asarray(patient_ids)
        if patient_ids.shape != (n_images,):
            raise ValueError(f"patient_ids has shape {patient_ids.shape}, expected ({n_images},)")
        unit = "patient"
        patient_index = np.unique(patient_ids, return_inverse=True)[1].reshape(-1)
    n_units = int(patient_index.max()) + 1

    classes = [_ClassData(scores[:, c], targets[:, c], patient_index) for c in range(n_classes)]
    defined = [c for c in range(n_classes) if classes[c].defined]
    correct = None if class_labels is None else (scores.argmax(axis=1) == class_labels).astype(np.float64)

    # Bootstrap replicates; NaN marks a resample that does not count for that statistic.
    boot_auroc = np.full((n_bootstrap, n_classes), np.nan)
    boot_auprc = np.full((n_bootstrap, n_classes), np.nan)
    boot_accuracy = np.full(n_bootstrap, np.nan)
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        images_per_unit = np.bincount(patient_index, minlength=n_units)
        correct_per_unit = None if correct is None else np.bincount(patient_index, correct, minlength=n_units)
        for start in range(0, n_bootstrap, _BLOCK):
            rows = slice(start, min(start + _BLOCK, n_bootstrap))
            counts = _draw_counts(rng, rows.stop - rows.start, n_units)
            for c in defined:
                boot_auroc[rows, c], boot_auprc[rows, c] = classes[c].bootstrap(counts)
            if correct_per_unit is not None:
                # Every resample draws n_units patients, each with >= 1 image, so the denominator is positive.
                boot_accuracy[rows] = (counts @ correct_per_unit) / (counts @ images_per_unit)

    per_class = {}
    for c, name in enumerate(names):
        data = classes[c]
        per_class[name] = {
            "auroc": data.auroc,
            "auprc": data.auprc,
            "n_pos": data.n_pos,
            "n_neg": data.n_neg,
            "auroc_ci95": _interval(boot_auroc[:, c], confidence),
            "auprc_ci95": _interval(boot_auprc[:, c], confidence),
        }

    if defined:
        # A resample counts for the mean only if every class of the point estimate is defined in it.
        boot_mean_auroc = boot_auroc[:, defined].mean(axis=1)
        boot_mean_auprc = boot_auprc[:, defined].mean(axis=1)
        mean_auroc = float(np.mean([classes[c].auroc for c in defined]))
        mean_auprc = float(np.mean([classes[c].auprc for c in defined]))
    else:
        boot_mean_auroc = boot_mean_auprc = np.full(n_bootstrap, np.nan)
        mean_auroc = mean_auprc = None

    accuracy = None if correct is None else float(correct.mean())
    return {
        "n_images": int(n_images),
        "mean_auroc": mean_auroc,
        "mean_auroc_ci95": _interval(boot_mean_auroc, confidence),
        "mean_auprc": mean_auprc,
        "mean_auprc_ci95": _interval(boot_mean_auprc, confidence),
        "accuracy": accuracy,
        "accuracy_ci95": None if correct is None else _interval(boot_accuracy, confidence),
        "per_class": per_class,
        "undefined": [names[c] for c in range(n_classes) if not classes[c].defined],
        "bootstrap": {
            "unit": unit,
            "n_units": n_units,
            "n_resamples": int(n_bootstrap),
            "confidence": float(confidence),
            "seed": int(seed),
            "n_used": {
                "mean": int(np.isfinite(boot_mean_auroc).sum()),
                "accuracy": None if correct is None else int(np.isfinite(boot_accuracy).sum()),
                "per_class": {name: int(np.isfinite(boot_auroc[:, c]).sum()) for c, name in enumerate(names)},
            },
        },
    }


def roc_curves(
    scores, labels, label_names: Sequence[str], *, problem_type: str = MULTI_LABEL
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`{name: (fpr, tpr)}` from scikit-learn's `roc_curve`, NaN labels left out per class.

    Classes with a single label value among their known rows have no curve and are absent from the result.
    Single-label problems (labels of shape (N,)) give one-vs-rest curves.
    """
    scores = np.asarray(scores, dtype=np.float64)
    names = [str(name) for name in label_names]
    targets, _ = _check_inputs(scores, labels, names, problem_type)
    curves = {}
    for c, name in enumerate(names):
        known = ~np.isnan(targets[:, c])
        y = targets[known, c]
        if y.size and 0 < y.sum() < y.size:
            fpr, tpr, _ = roc_curve(y, scores[known, c])
            curves[name] = (fpr, tpr)
    return curves


class _ClassData:
    """One class's known rows, its point estimates, and the index arrays its bootstrap needs, computed once."""

    def __init__(self, scores: np.ndarray, targets: np.ndarray, patient_index: np.ndarray):
        known = ~np.isnan(targets)
        y = targets[known].astype(bool)
        s = scores[known]
        self.n_pos = int(y.sum())
        self.n_neg = int(y.size - self.n_pos)
        self.defined = self.n_pos > 0 and self.n_neg > 0
        self.auroc = float(roc_auc_score(y, s)) if self.defined else None
        self.auprc = float(average_precision_score(y, s)) if self.defined else None
        if not self.defined:
            return
        patients = patient_index[known]
        pos_order = np.argsort(s[y], kind="stable")
        neg_order = np.argsort(s[~y], kind="stable")
        pos_scores, neg_scores = s[y][pos_order], s[~y][neg_order]
        self.pos_patient = patients[y][pos_order]
        self.neg_patient = patients[~y][neg_order]
        # For each positive (ascending): negatives strictly below it, negatives up to and including its ties, and
        # positives strictly below it. Prefix sums of resampled weights at these indices give every count needed.
        self.neg_below = np.searchsorted(neg_scores, pos_scores, side="left")
        self.neg_up_to = np.searchsorted(neg_scores, pos_scores, side="right")
        self.pos_below = np.searchsorted(pos_scores, pos_scores, side="left")

    def bootstrap(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """AUROC and AP for each row of `counts` (resamples × patients, how often each patient was drawn).

        Equal to scikit-learn on the data with every image repeated as often as its patient was drawn. Counts are
        integers so that the prefix sums are exact (and integer cumsum is several times faster than float).
        """
        pos_weight = counts[:, self.pos_patient]
        neg_cum = _prefix_sum(counts[:, self.neg_patient])
        pos_cum = _prefix_sum(pos_weight)
        total_pos = pos_cum[:, -1]
        total_neg = neg_cum[:, -1]

        # Mann-Whitney: each positive wins against the negatives below it and half-wins against tied ones.
        twice_wins = (pos_weight * (neg_cum[:, self.neg_below] + neg_cum[:, self.neg_up_to])).sum(axis=1)
        # Average precision: each positive adds its weight × the precision at the threshold equal to its score.
        true_pos = total_pos[:, None] - pos_cum[:, self.pos_below]
        predicted = true_pos + (total_neg[:, None] - neg_cum[:, self.neg_below])
        with np.errstate(invalid="ignore", divide="ignore"):
            # 0/0 only where the positive was not drawn (weight 0), so it adds nothing either way.
            precision = np.where(predicted > 0, true_pos / np.maximum(predicted, 1), 0.0)
            auroc = twice_wins / (2.0 * total_pos * total_neg)
            ap = (pos_weight * precision).sum(axis=1) / total_pos
        undefined = (total_pos == 0) | (total_neg == 0)
        auroc[undefined] = np.nan
        ap[undefined] = np.nan
        return auroc, ap


def _prefix_sum(weights: np.ndarray) -> np.ndarray:
    """Row-wise cumulative sums with a leading 0 column: `out[:, k]` is the sum of the first k columns."""
    out = np.zeros((weights.shape[0], weights.shape[1] + 1), dtype=weights.dtype)
    np.cumsum(weights, axis=1, out=out[:, 1:])
    return out


def _draw_counts(rng: np.random.Generator, n_resamples: int, n_units: int) -> np.ndarray:
    """How often each unit is drawn in `n_resamples` draws of `n_units` units with replacement."""
    draws = rng.integers(0, n_units, size=(n_resamples, n_units))
    draws += np.arange(n_resamples)[:, None] * n_units
    return np.bincount(draws.ravel(), minlength=n_resamples * n_units).reshape(n_resamples, n_units)


def _interval(replicates: np.ndarray, confidence: float) -> list[float] | None:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return None
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return [float(low), float(high)]


def _check_inputs(
    scores: np.ndarray, labels, names: list[str], problem_type: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate and return (N, C) float targets (NaN = unknown), plus the class indices for single-label problems."""
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {scores.shape}")
    n_images, n_classes = scores.shape
    if n_images == 0:
        raise ValueError("no images to evaluate")
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} label names for {n_classes} score columns")
    if len(set(names)) != n_classes:
        raise ValueError(f"label names must be unique, got {names}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")

    if problem_type == MULTI_LABEL:
        targets = np.asarray(labels, dtype=np.float64)
        if targets.shape != scores.shape:
            raise ValueError(f"multi-label labels must have the scores' shape {scores.shape}, got {targets.shape}")
        known = targets[~np.isnan(targets)]
        if not np.isin(known, (0.0, 1.0)).all():
            raise ValueError("multi-label labels must be 0, 1 or NaN (unknown)")
        return targets, None

    if problem_type == SINGLE_LABEL:
        class_labels = np.asarray(labels)
        if class_labels.shape != (n_images,):
            raise ValueError(f"single-label labels must be ({n_images},) class indices, got shape {class_labels.shape}")
        if class_labels.size and not np.issubdtype(class_labels.dtype, np.integer):
            if not np.all(np.mod(class_labels, 1) == 0):
                raise ValueError("single-label labels must be integer class indices")
            class_labels = class_labels.astype(np.int64)
        if class_labels.size and (class_labels.min() < 0 or class_labels.max() >= n_classes):
            raise ValueError(f"single-label labels must lie in [0, {n_classes})")
        targets = np.zeros((n_images, n_classes))
        targets[np.arange(n_images), class_labels] = 1.0
        return targets, class_labels

    raise ValueError(f"problem_type must be {MULTI_LABEL!r} or {SINGLE_LABEL!r}, got {problem_type!r}")
