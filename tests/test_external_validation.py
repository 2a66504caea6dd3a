"""External validation: a model scored on a corpus whose labels are not its own (an NIH model on CheXpert) is scored
on the findings both name exactly, and metrics.json says how its labels were paired with the corpus's."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import one_error_line, randomize_
from sklearn.metrics import roc_auc_score

from cxr_vitmae import CXRImageProcessor, CXRViTMAEConfig, ViTMAEForChestXray
from cxr_vitmae.data import label_names, load_cxr_dataset
from cxr_vitmae.data.label_vocabulary import match_labels
from cxr_vitmae.errors import InputError
from cxr_vitmae.models.chest_xray_labels import CHEXPERT_COMPETITION_LABELS, COVIDX_LABELS, NIH_CHESTXRAY14_LABELS

SCRIPT = Path(sys.executable).parent / "cxr-vitmae"
# The NIH findings that CheXpert's five competition tasks name exactly (reference/hf-stack-notes.md, "Own data").
NIH_TO_CHEXPERT = {
    "Cardiomegaly": "Cardiomegaly",
    "Edema": "Edema",
    "Consolidation": "Consolidation",
    "Atelectasis": "Atelectasis",
    "Effusion": "Pleural Effusion",
}


@pytest.fixture(scope="module")
def chexpert(phantom_corpus) -> Path:
    return phantom_corpus(120, layout="chexpert", size=48, seed=3)


def save_model(path: Path, **overrides) -> ViTMAEForChestXray:
    """A tiny classifier with random weights; the 14 NIH labels unless OVERRIDES say otherwise."""
    config = CXRViTMAEConfig.from_preset("vit-tiny", image_size=32, patch_size=8, num_hidden_layers=2, **overrides)
    model = randomize_(ViTMAEForChestXray(config), std=0.2).eval()
    model.save_pretrained(path)
    return model


def evaluate_on(chexpert: Path, tmp_path: Path) -> list[str]:
    """`cxr-vitmae evaluate` arguments for TMP_PATH/model on the CheXpert phantoms, writing TMP_PATH/m.json."""
    model, output = str(tmp_path / "model"), str(tmp_path / "m.json")
    return ["evaluate", model, "--dataset", "chexpert", "--data-dir", str(chexpert), "--output", output]


@pytest.mark.slow
def test_an_nih_model_on_chexpert_is_scored_on_the_findings_both_name(chexpert, tmp_path):
    model = save_model(tmp_path / "nih-model")
    assert list(model.config.id2label.values()) == list(NIH_CHESTXRAY14_LABELS)
    output = tmp_path / "metrics.json"
    done = subprocess.run(
        [str(SCRIPT), "evaluate", str(tmp_path / "nih-model"), "--dataset", "chexpert", "--data-dir", str(chexpert),
         "--output", str(output), "--n-bootstrap", "20"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = json.loads(output.read_text())

    corpus_labels = label_names("chexpert")
    shared = [name for name in corpus_labels if name in NIH_TO_CHEXPERT.values()]  # in the corpus's order
    mapping = metrics["label_mapping"]
    assert mapping["model_to_dataset"] == NIH_TO_CHEXPERT and list(mapping["model_to_dataset"].values()) == shared
    assert mapping["model_labels_left_out"] == [name for name in NIH_CHESTXRAY14_LABELS if name not in NIH_TO_CHEXPERT]
    assert mapping["dataset_labels_left_out"] == [name for name in corpus_labels if name not in shared]
    mapping_lines = [line for line in done.stdout.splitlines() if "Effusion -> Pleural Effusion" in line]
    assert len(mapping_lines) == 1 and "Mass" in mapping_lines[0], done.stdout

    # The same scores by hand: the model on the test images through its own processor, the paired columns.
    test = load_cxr_dataset("chexpert", chexpert)["test"]
    processor = CXRImageProcessor.from_pretrained(tmp_path / "nih-model")
    with torch.no_grad():
        scores = torch.sigmoid(model(**processor([row["image"] for row in test], return_tensors="pt")).logits).numpy()
    labels = np.asarray(test["labels"])
    assert metrics["n_images"] == len(test)
    assert list(metrics["per_class"]) == shared
    for model_label, corpus_label in NIH_TO_CHEXPERT.items():
        truth = labels[:, corpus_labels.index(corpus_label)]
        expected = roc_auc_score(truth, scores[:, model.config.label2id[model_label]])
        assert metrics["per_class"][corpus_label]["auroc"] == pytest.approx(expected, abs=1e-6), corpus_label
        assert metrics["per_class"][corpus_label]["n_pos"] == int(truth.sum())


def test_a_model_sharing_no_finding_is_refused_in_one_line_naming_both_lists(chexpert, tmp_path, capsys):
    # Each rolls up to or resembles a CheXpert finding (Lung Lesion, Lung Opacity, Pleural Other): none is one.
    model_labels = ["Mass", "Nodule", "Infiltration", "Pleural_Thickening"]
    save_model(tmp_path / "model", id2label=dict(enumerate(model_labels)))
    line = one_error_line(capsys, [*evaluate_on(chexpert, tmp_path), "--option", "tasks=all"])
    assert str(model_labels) in line and str(label_names("chexpert", tasks="all")) in line, line
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("labels", [["Cardiomegaly", "Edema"], list(CHEXPERT_COMPETITION_LABELS)])
def test_a_single_label_model_on_a_multi_label_corpus_is_refused(chexpert, tmp_path, capsys, labels):
    """With fewer classes (refused from the config) or with exactly the corpus's (refused once the split is read)."""
    save_model(tmp_path / "model", id2label=dict(enumerate(labels)), problem_type="single_label_classification")
    line = one_error_line(capsys, evaluate_on(chexpert, tmp_path))
    assert "single-label" in line and "chexpert" in line, line
    assert not (tmp_path / "m.json").exists()


def test_labels_pair_only_when_they_name_the_same_finding():
    corpus_labels = ["Lung Lesion", "Lung Opacity", "Pleural Effusion", "My Finding", "Other"]
    match = match_labels(["my_finding", "Effusion", "Nodule", "Airspace Opacity"], corpus_labels)
    # A user's own label pairs by its spelling; the pairs come in the corpus's order.
    pairs = {"Airspace Opacity": "Lung Opacity", "Effusion": "Pleural Effusion", "my_finding": "My Finding"}
    assert match.model_to_corpus == pairs and list(match.model_to_corpus) == list(pairs)
    assert match.model_only == ["Nodule"] and match.corpus_only == ["Lung Lesion", "Other"]
    # COVIDx's pneumonia (beside a COVID-19 class) is not NIH's Pneumonia of any cause, but is COVIDx's own.
    assert match_labels(COVIDX_LABELS, NIH_CHESTXRAY14_LABELS).model_to_corpus == {}
    assert match_labels(COVIDX_LABELS, list(reversed(COVIDX_LABELS))).model_only == []
    with pytest.raises(InputError, match="Effusion"):
        match_labels(["Effusion", "Pleural Effusion"], CHEXPERT_COMPETITION_LABELS)
