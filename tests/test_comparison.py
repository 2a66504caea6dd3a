"""Paired comparison of runs on the same test patients, and the test predictions file the fine-tuning recipe writes."""

import numpy as np
import pytest

from cxr_vitmae.evaluation import classification_metrics
from cxr_vitmae.evaluation.comparison import paired_auroc_difference, pooled_mean_auroc
from cxr_vitmae.evaluation.prediction import load_predictions, save_predictions

N_IMAGES, N_CLASSES = 300, 4


def make_run(rng, labels, patient_ids, signal: float) -> dict:
    """Scores that separate the labels by `signal` (0: none) plus noise; labels with a few unknown (NaN) cells."""
    scores = 1 / (1 + np.exp(-(signal * np.nan_to_num(labels) + rng.normal(size=labels.shape))))
    return {
        "scores": scores,
        "labels": labels,
        "image_id": np.array([f"{i:05d}.png" for i in range(len(labels))]),
        "patient_id": patient_ids,
    }


@pytest.fixture()
def cohort():
    rng = np.random.default_rng(0)
    labels = (rng.random((N_IMAGES, N_CLASSES)) < 0.3).astype(float)
    labels[rng.random(labels.shape) < 0.05] = np.nan
    patient_ids = np.array([f"{i // 3:05d}" for i in range(N_IMAGES)])  # three images per patient
    return rng, labels, patient_ids


def test_one_run_equals_classification_metrics(cohort):
    rng, labels, patients = cohort
    run = make_run(rng, labels, patients, signal=1.0)
    metrics = classification_metrics(
        run["scores"], labels, label_names=list("abcd"), patient_ids=patients, n_bootstrap=200, seed=3
    )
    pooled = pooled_mean_auroc([run], n_bootstrap=200, seed=3)
    assert pooled["mean_auroc"] == pytest.approx(metrics["mean_auroc"], abs=1e-12)
    assert pooled["mean_auroc_ci95"] == pytest.approx(metrics["mean_auroc_ci95"], abs=1e-12)
    assert pooled["n_patients"] == 100


def test_a_better_model_wins_and_the_order_of_sides_matters(cohort):
    rng, labels, patients = cohort
    good = [make_run(rng, labels, patients, signal=2.0) for _ in range(3)]
    weak = [make_run(rng, labels, patients, signal=0.3) for _ in range(3)]
    result = paired_auroc_difference(good, weak, n_bootstrap=300)
    expected = np.mean([pooled_mean_auroc([r], n_bootstrap=0)["mean_auroc"] for r in good]) - np.mean(
        [pooled_mean_auroc([r], n_bootstrap=0)["mean_auroc"] for r in weak]
    )
    assert result["difference"] == pytest.approx(expected, abs=1e-12)
    assert result["difference"] > 0.1 and result["difference_ci95"][0] > 0 and result["p_value"] < 0.01
    reverse = paired_auroc_difference(weak, good, n_bootstrap=300)
    assert reverse["difference"] == pytest.approx(-result["difference"])
    assert reverse["p_value"] > 0.99


def test_equal_models_are_not_called_different(cohort):
    rng, labels, patients = cohort
    runs = [make_run(rng, labels, patients, signal=1.0) for _ in range(4)]
    result = paired_auroc_difference(runs[:2], runs[2:], n_bootstrap=400)
    assert result["difference_ci95"][0] < 0 < result["difference_ci95"][1]
    assert 0.02 < result["p_value"] < 0.98


def test_rows_may_come_in_any_order_but_images_and_labels_must_match(cohort):
    rng, labels, patients = cohort
    a, b = make_run(rng, labels, patients, 1.0), make_run(rng, labels, patients, 0.5)
    order = rng.permutation(N_IMAGES)
    shuffled = {key: value[order] for key, value in b.items()}
    assert paired_auroc_difference([a], [shuffled], n_bootstrap=50) == paired_auroc_difference([a], [b], n_bootstrap=50)
    other_images = {**b, "image_id": np.array([f"x{i}" for i in range(N_IMAGES)])}
    with pytest.raises(ValueError, match="run 2 was evaluated on other images"):
        paired_auroc_difference([a], [other_images])
    other_labels = {**b, "labels": np.where(np.isnan(labels), np.nan, 1 - np.nan_to_num(labels))}
    with pytest.raises(ValueError, match="run 2 has other labels"):
        paired_auroc_difference([a], [other_labels])
    with pytest.raises(ValueError, match="at least one run"):
        paired_auroc_difference([], [b])


def test_predictions_file_round_trip(tmp_path, cohort):
    import datasets

    rng, labels, patients = cohort
    examples = datasets.Dataset.from_dict(
        {"image_id": [f"{i:05d}.png" for i in range(N_IMAGES)], "patient_id": list(patients)}
    )
    index = rng.permutation(N_IMAGES)[:50]
    prediction = {"scores": rng.random((50, N_CLASSES)), "labels": labels[index], "index": index}
    save_predictions(tmp_path / "test_predictions.npz", prediction, examples)
    loaded = load_predictions(tmp_path / "test_predictions.npz")
    assert list(loaded["image_id"]) == [f"{i:05d}.png" for i in index]
    assert list(loaded["patient_id"]) == list(patients[index])
    np.testing.assert_array_equal(loaded["scores"], prediction["scores"])
    np.testing.assert_array_equal(loaded["labels"], prediction["labels"])
    assert not list(tmp_path.glob("*.partial*"))
