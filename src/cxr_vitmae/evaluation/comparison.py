"""Is model A better than model B on the same test images? A paired, patient-level bootstrap of the difference in
mean AUROC, each side averaged over its runs (seeds).

Each resample draws the test patients once and scores every run of both sides on that same draw, so the interval
reflects the uncertainty of the difference, not of two independent means (two marginal CIs that overlap can still
hide a difference every resample agrees on). The resampling reuses `metrics`' exact weighted AUROC (`_ClassData`)
and its draws, so a side of one run has the marginal mean AUROC interval `classification_metrics` reports for the
same seed and resample count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .metrics import _BLOCK, _ClassData, _draw_counts, _interval

__all__ = ["paired_auroc_difference", "pooled_mean_auroc"]


def paired_auroc_difference(
    runs_a: Sequence[dict[str, np.ndarray]],
    runs_b: Sequence[dict[str, np.ndarray]],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Mean AUROC of A minus mean AUROC of B, each the average over its runs of the macro mean over classes.

    Args:
        runs_a, runs_b: predictions of each run (`prediction.load_predictions`: `scores`, `labels` (N, C) with NaN
            unknown, `image_id`, `patient_id`), all on the same images; row order may differ between runs.
        n_bootstrap: resamples of the test patients.
        seed: seed of the draws.
        confidence: coverage of the percentile interval.

    Returns:
        `difference`, `difference_ci95`, `p_value` (one-sided, H0: A <= B: the share of resamples with a difference
        <= 0, with the +1 correction), `mean_auroc_a` and `mean_auroc_b` (point estimates), `n_runs_a`,
        `n_runs_b`, and the bootstrap's `n_images`, `n_patients`, `classes` (those defined in every run),
        `n_used` (resamples in which every such class had both label values), `n_resamples`, `confidence`, `seed`.

    Raises:
        ValueError: when a side is empty, or runs disagree on the images, their labels or the number of classes.
    """
    if not runs_a or not runs_b:
        raise ValueError("each side needs at least one run")
    point, replicates, info = _run_means([*runs_a, *runs_b], n_bootstrap, seed)
    a, b = slice(0, len(runs_a)), slice(len(runs_a), None)
    differences = replicates[a].mean(axis=0) - replicates[b].mean(axis=0)
    finite = differences[np.isfinite(differences)]
    return {
        "difference": float(point[a].mean() - point[b].mean()),
        "difference_ci95": _interval(differences, confidence),
        "p_value": float((1 + np.sum(finite <= 0)) / (1 + finite.size)),
        "mean_auroc_a": float(point[a].mean()),
        "mean_auroc_b": float(point[b].mean()),
        "n_runs_a": len(runs_a),
        "n_runs_b": len(runs_b),
        **info,
        "n_used": int(finite.size),
        "confidence": float(confidence),
    }


def pooled_mean_auroc(
    runs: Sequence[dict[str, np.ndarray]], *, n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict:
    """The runs' mean AUROC averaged over runs (seeds), with a patient-level bootstrap interval of that average
    (every run scored on the same draw of patients). One run gives `classification_metrics`' mean and interval."""
    if not runs:
        raise ValueError("no runs")
    point, replicates, info = _run_means(runs, n_bootstrap, seed)
    return {
        "mean_auroc": float(point.mean()),
        "mean_auroc_ci95": _interval(replicates.mean(axis=0), confidence),
        "n_runs": len(runs),
        **info,
        "confidence": float(confidence),
    }


def _run_means(runs: Sequence[dict[str, np.ndarray]], n_bootstrap: int, seed: int):
    """Each run's macro-mean AUROC over the classes defined in every run: the point estimates (runs,) and the
    bootstrap replicates (runs, resamples; NaN where a class lost a label value), all runs on the same draws."""
    runs = [_aligned(run) for run in runs]
    reference = runs[0]
    for number, run in enumerate(runs[1:], start=2):
        if not np.array_equal(run["image_id"], reference["image_id"]):
            raise ValueError(f"run {number} was evaluated on other images than run 1")
        if run["scores"].shape != reference["scores"].shape:
            raise ValueError(
                f"run {number} has scores of shape {run['scores'].shape}, run 1 {reference['scores'].shape}"
            )
        if not np.array_equal(run["labels"], reference["labels"], equal_nan=True):
            raise ValueError(f"run {number} has other labels than run 1 for the same images")
    patient_index = np.unique(reference["patient_id"], return_inverse=True)[1].reshape(-1)
    n_units = int(patient_index.max()) + 1
    labels = reference["labels"].astype(np.float64)
    n_classes = labels.shape[1]
    data = [
        [_ClassData(run["scores"][:, c].astype(np.float64), labels[:, c], patient_index) for c in range(n_classes)]
        for run in runs
    ]
    defined = [c for c in range(n_classes) if all(run_data[c].defined for run_data in data)]
    if not defined:
        raise ValueError("no class has both label values in the test images")
    point = np.array([np.mean([run_data[c].auroc for c in defined]) for run_data in data])
    replicates = np.full((len(runs), n_bootstrap), np.nan)
    rng = np.random.default_rng(seed)
    for start in range(0, n_bootstrap, _BLOCK):
        rows = slice(start, min(start + _BLOCK, n_bootstrap))
        counts = _draw_counts(rng, rows.stop - rows.start, n_units)
        for r, run_data in enumerate(data):
            replicates[r, rows] = np.mean([run_data[c].bootstrap(counts)[0] for c in defined], axis=0)
    info = {
        "n_images": int(len(reference["image_id"])),
        "n_patients": n_units,
        "classes": len(defined),
        "n_resamples": int(n_bootstrap),
        "seed": int(seed),
    }
    return point, replicates, info


def _aligned(run: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The run's rows sorted by image id, so runs whose loaders ordered the split differently compare row by row."""
    order = np.argsort(run["image_id"], kind="stable")
    return {key: np.asarray(run[key])[order] for key in ("scores", "labels", "image_id", "patient_id")}
