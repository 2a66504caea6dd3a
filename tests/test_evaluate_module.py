"""The `evaluate` module shipped with the package: loaded offline from its path, it gives what metrics.json holds."""

import json
import os

import numpy as np
import pytest
from model_helpers import randomize_

from cxr_vitmae import CXRViTMAEConfig, ViTMAEForChestXray
from cxr_vitmae.evaluation import MULTI_LABEL, SINGLE_LABEL, classification_metrics, evaluate_module_path
from cxr_vitmae.evaluation.evaluate_model import evaluate_split, load_split
from cxr_vitmae.evaluation.prediction import PREDICTIONS_FILE, load_predictions, save_predictions

evaluate = pytest.importorskip("evaluate")

NAMES = ["Atelectasis", "Effusion", "Nodule", "Hernia"]


def load_metric():
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # conftest: a module from a path needs no Hub
    return evaluate.load(evaluate_module_path())


def multi_label_inputs(n: int = 90, seed: int = 0):
    """Float32 scores (as the recipes save them), multi-hot labels with unknowns, 1-4 images per patient, and a
    class that is all negative among its known rows (undefined: no AUROC)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(NAMES))) < 0.35).astype(np.float32)
    labels[rng.random(labels.shape) < 0.15] = np.nan
    labels[:, 3] = np.where(np.isnan(labels[:, 3]), np.nan, 0.0)
    scores = np.clip(0.5 * labels + 0.6 * rng.random(labels.shape), 0, 1)
    scores = np.nan_to_num(scores, nan=0.3).astype(np.float32)
    patients = np.repeat([f"p{i:03d}" for i in range(n)], rng.integers(1, 5, n))[:n]
    return scores, labels, patients


def test_module_equals_classification_metrics_with_unknown_labels_and_patients():
    scores, labels, patients = multi_label_inputs()
    expected = classification_metrics(
        scores, labels, label_names=NAMES, patient_ids=patients, problem_type=MULTI_LABEL, n_bootstrap=200, seed=7
    )
    assert expected["undefined"] == ["Hernia"] and expected["bootstrap"]["unit"] == "patient"
    assert expected["bootstrap"]["n_units"] < len(scores)

    metric = load_metric()
    result = metric.compute(
        predictions=scores, references=labels, patient_ids=patients, label_names=NAMES, n_bootstrap=200, seed=7
    )
    assert result == expected

    # Batch by batch (as an evaluation loop adds them), then compute: the same rows, the same result.
    for start in range(0, len(scores), 32):
        rows = slice(start, start + 32)
        metric.add_batch(predictions=scores[rows], references=labels[rows], patient_ids=patients[rows])
    assert metric.compute(label_names=NAMES, n_bootstrap=200, seed=7) == expected


def test_single_label_references_and_no_patient_ids_resample_images():
    scores, _, _ = multi_label_inputs(60, seed=1)
    scores = scores[:, :3] / scores[:, :3].sum(axis=1, keepdims=True)
    classes = np.random.default_rng(2).integers(0, 3, len(scores))
    names = ["normal", "pneumonia", "COVID-19"]
    expected = classification_metrics(
        scores, classes, label_names=names, patient_ids=None, problem_type=SINGLE_LABEL, n_bootstrap=100
    )
    result = load_metric().compute(predictions=scores, references=classes, label_names=names, n_bootstrap=100)
    assert result == expected
    assert result["bootstrap"]["unit"] == "image" and result["accuracy"] is not None


def test_module_refuses_what_it_cannot_match_exactly():
    scores, labels, patients = multi_label_inputs(20)
    with pytest.raises(ValueError, match="label_names"):
        load_metric().compute(predictions=scores, references=labels, patient_ids=patients)
    with pytest.raises(ValueError):  # integer patient ids would sort in another order than the corpora's strings
        load_metric().compute(predictions=scores, references=labels, patient_ids=list(range(20)), label_names=NAMES)


def test_module_on_a_runs_saved_predictions_equals_its_metrics_json(phantom_corpus, tmp_path):
    from accelerate import Accelerator

    phantoms = phantom_corpus(80, size=48, seed=2)
    config = CXRViTMAEConfig.from_preset("vit-tiny", image_size=32, patch_size=8, num_hidden_layers=2)
    model = randomize_(ViTMAEForChestXray(config), std=0.2).eval()
    model.save_pretrained(tmp_path / "model")
    examples = load_split("nih-chestxray14", phantoms, "test")
    record, prediction = evaluate_split(
        Accelerator(cpu=True), tmp_path / "model", examples, dataset="nih-chestxray14", split="test",
        data_dir=phantoms, options={}, batch_size=16, n_bootstrap=100, bootstrap_seed=3,
    )  # fmt: skip
    (tmp_path / "metrics.json").write_text(json.dumps(record))
    save_predictions(tmp_path / PREDICTIONS_FILE, prediction, examples)

    # What a user has after a run: metrics.json, test_predictions.npz and the model's label names.
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    run = load_predictions(tmp_path / PREDICTIONS_FILE)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    result = load_metric().compute(
        predictions=run["scores"], references=run["labels"], patient_ids=run["patient_id"], label_names=names,
        n_bootstrap=metrics["bootstrap"]["n_resamples"], seed=metrics["bootstrap"]["seed"],
    )  # fmt: skip
    assert result["bootstrap"]["unit"] == "patient" and result["mean_auroc"] is not None
    assert {"per_class", "mean_auroc_ci95", "bootstrap"} <= set(result)
    assert json.loads(json.dumps(result)) == {key: metrics[key] for key in result}
