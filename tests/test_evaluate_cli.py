"""`cxr-vitmae evaluate` on the phantom corpus, against metrics computed here from the image processor's output."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import randomize_
from sklearn.metrics import roc_auc_score

from cxr_vitmae import CXRImageProcessor, CXRViTMAEConfig, ViTMAEForChestXray
from cxr_vitmae.data import load_cxr_dataset

SCRIPT = Path(sys.executable).parent / "cxr-vitmae"


@pytest.fixture(scope="module")
def phantoms(phantom_corpus):
    return phantom_corpus(80, size=48, seed=2)


def save_model(path: Path, **overrides) -> ViTMAEForChestXray:
    config = CXRViTMAEConfig.from_preset("vit-tiny", image_size=32, patch_size=8, num_hidden_layers=2, **overrides)
    model = randomize_(ViTMAEForChestXray(config), std=0.2).eval()
    model.save_pretrained(path)
    return model


@pytest.mark.slow
def test_evaluate_writes_the_contract_metrics(phantoms, tmp_path):
    model = save_model(tmp_path / "model")
    output = tmp_path / "metrics.json"
    done = subprocess.run(
        [str(SCRIPT), "evaluate", str(tmp_path / "model"), "--dataset", "nih-chestxray14", "--data-dir", str(phantoms),
         "--output", str(output), "--n-bootstrap", "50"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = json.loads(output.read_text())

    test = load_cxr_dataset("nih-chestxray14", phantoms)["test"]
    processor = CXRImageProcessor.from_pretrained(tmp_path / "model")
    with torch.no_grad():
        scores = torch.sigmoid(model(**processor([row["image"] for row in test], return_tensors="pt")).logits).numpy()
    labels = np.asarray(test["labels"])
    expected = [
        roc_auc_score(labels[:, c], scores[:, c]) for c in range(labels.shape[1]) if len(set(labels[:, c])) == 2
    ]
    assert metrics["n_images"] == len(test) and metrics["split"] == "test"
    assert metrics["mean_auroc"] == pytest.approx(float(np.mean(expected)), abs=1e-4)
    low, high = metrics["mean_auroc_ci95"]
    assert low <= metrics["mean_auroc"] <= high
    assert set(metrics["per_class"]) == set(model.config.id2label.values())


@pytest.mark.slow
def test_evaluate_refuses_a_model_with_other_labels(phantoms, tmp_path):
    save_model(tmp_path / "model", id2label={0: "normal", 1: "pneumonia", 2: "COVID-19"})
    done = subprocess.run(
        [str(SCRIPT), "evaluate", str(tmp_path / "model"), "--dataset", "nih-chestxray14", "--data-dir", str(phantoms)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "predicts ['normal', 'pneumonia', 'COVID-19']" in lines[0], done.stderr
