"""Evaluation metrics: agreement with scikit-learn, NaN / undefined-class rules, and the patient-level bootstrap."""

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from cxr_vitmae.evaluation import classification_metrics, roc_curves
from cxr_vitmae.evaluation.metrics import _ClassData, _draw_counts

NAMES = ["Atelectasis", "Cardiomegaly", "Effusion", "Hernia"]


def _multilabel(n, n_classes=4, seed=0, separation=1.0):
    """Scores that depend on the labels, so AUROC is well away from 0.5 and 1."""
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.1, 0.4, n_classes)
    labels = (rng.random((n, n_classes)) < prevalence).astype(np.float64)
    logits = rng.normal(size=(n, n_classes)) + separation * labels - 1.0
    return 1.0 / (1.0 + np.exp(-logits)), labels


def _width(interval):
    return interval[1] - interval[0]


def test_point_estimates_equal_sklearn():
    scores, labels = _multilabel(300)
    out = classification_metrics(scores, labels, label_names=NAMES, patient_ids=np.arange(300), n_bootstrap=0)
    aurocs = [roc_auc_score(labels[:, c], scores[:, c]) for c in range(4)]
    auprcs = [average_precision_score(labels[:, c], scores[:, c]) for c in range(4)]
    for c, name in enumerate(NAMES):
        assert out["per_class"][name]["auroc"] == pytest.approx(aurocs[c], abs=1e-15)
        assert out["per_class"][name]["auprc"] == pytest.approx(auprcs[c], abs=1e-15)
        assert out["per_class"][name]["n_pos"] == int(labels[:, c].sum())
        assert out["per_class"][name]["auroc_ci95"] is None
    assert out["mean_auroc"] == pytest.approx(np.mean(aurocs), abs=1e-15)
    assert out["mean_auroc"] == pytest.approx(roc_auc_score(labels, scores, average="macro"), abs=1e-15)
    assert out["mean_auprc"] == pytest.approx(np.mean(auprcs), abs=1e-15)
    assert out["n_images"] == 300
    assert out["accuracy"] is None and out["accuracy_ci95"] is None
    assert out["undefined"] == []


def test_nan_labels_are_excluded_per_class():
    scores, labels = _multilabel(400, seed=1)
    rng = np.random.default_rng(101)
    labels[rng.random(labels.shape) < 0.3] = np.nan  # different unknown rows in every class
    out = classification_metrics(scores, labels, label_names=NAMES, patient_ids=np.arange(400), n_bootstrap=20)
    for c, name in enumerate(NAMES):
        known = ~np.isnan(labels[:, c])
        assert out["per_class"][name]["auroc"] == pytest.approx(roc_auc_score(labels[known, c], scores[known, c]))
        assert out["per_class"][name]["auprc"] == pytest.approx(
            average_precision_score(labels[known, c], scores[known, c])
        )
        assert out["per_class"][name]["n_pos"] + out["per_class"][name]["n_neg"] == known.sum()
    assert out["n_images"] == 400


def test_single_valued_class_is_null_and_left_out_of_the_mean():
    scores, labels = _multilabel(200, seed=2)
    labels[:, 3] = 0.0  # no positive Hernia
    labels[:100, 1] = np.nan
    labels[100:, 1] = 1.0  # Cardiomegaly: only positives among its known rows
    out = classification_metrics(scores, labels, label_names=NAMES, patient_ids=np.arange(200), n_bootstrap=50)
    assert out["undefined"] == ["Cardiomegaly", "Hernia"]
    for name in ("Cardiomegaly", "Hernia"):
        entry = out["per_class"][name]
        assert entry["auroc"] is None and entry["auprc"] is None
        assert entry["auroc_ci95"] is None and entry["auprc_ci95"] is None
        assert out["bootstrap"]["n_used"]["per_class"][name] == 0
    assert out["per_class"]["Hernia"]["n_pos"] == 0
    expected = np.mean([roc_auc_score(labels[:, c], scores[:, c]) for c in (0, 2)])
    assert out["mean_auroc"] == pytest.approx(expected)
    assert out["mean_auroc_ci95"] is not None

    scores, labels = _multilabel(50, seed=2)
    labels[:] = 0.0
    out = classification_metrics(scores, labels, label_names=NAMES, patient_ids=None, n_bootstrap=10)
    assert out["mean_auroc"] is None and out["mean_auroc_ci95"] is None and out["undefined"] == NAMES


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_statistics_equal_sklearn(ties):
    rng = np.random.default_rng(3)
    n = 500
    scores = rng.random(n)
    if ties:
        scores = np.round(scores, 1)  # many ties, including between positives and negatives
    labels = (rng.random(n) < 0.3 + 0.4 * scores).astype(np.float64)
    patient = rng.integers(0, 150, n)
    patient = np.unique(patient, return_inverse=True)[1]
    n_patients = patient.max() + 1
    data = _ClassData(scores, labels, patient)

    # Every patient drawn once: the point estimate.
    auroc, ap = data.bootstrap(np.ones((1, n_patients), dtype=np.int64))
    assert auroc[0] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert ap[0] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert data.auroc == pytest.approx(auroc[0], abs=1e-12) and data.auprc == pytest.approx(ap[0], abs=1e-12)

    # Real resamples (with zero counts) equal scikit-learn on the images repeated as often as their patient.
    counts = _draw_counts(np.random.default_rng(4), 5, n_patients)
    auroc, ap = data.bootstrap(counts)
    for row in range(5):
        repeats = counts[row, patient]
        y, s = np.repeat(labels, repeats), np.repeat(scores, repeats)
        assert auroc[row] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert ap[row] == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_draw_counts_are_draws_with_replacement():
    counts = _draw_counts(np.random.default_rng(0), 200, 50)
    assert counts.shape == (200, 50)
    assert (counts.sum(axis=1) == 50).all()
    assert counts.mean() == pytest.approx(1.0)
    assert (counts == 0).mean() == pytest.approx((1 - 1 / 50) ** 50, abs=0.02)  # ≈ 1/e of patients left out


def test_ci_contains_estimate_and_narrows_with_n():
    widths = {}
    for n in (400, 4000):
        scores, labels = _multilabel(n, seed=5)
        out = classification_metrics(scores, labels, label_names=NAMES, patient_ids=np.arange(n), n_bootstrap=500)
        for key in ("mean_auroc", "mean_auprc"):
            low, high = out[f"{key}_ci95"]
            assert low <= out[key] <= high
        for entry in out["per_class"].values():
            assert entry["auroc_ci95"][0] <= entry["auroc"] <= entry["auroc_ci95"][1]
            assert entry["auprc_ci95"][0] <= entry["auprc"] <= entry["auprc_ci95"][1]
        assert out["bootstrap"]["n_used"]["mean"] == 500
        widths[n] = (_width(out["mean_auroc_ci95"]), _width(out["per_class"]["Atelectasis"]["auroc_ci95"]))
    # 10× the patients: width should shrink by about √10 ≈ 3.2.
    assert widths[4000][0] < 0.5 * widths[400][0]
    assert widths[4000][1] < 0.5 * widths[400][1]


def test_bootstrap_resamples_patients_not_images():
    n, k = 300, 5
    scores, labels = _multilabel(n, seed=6)
    patients = np.array([f"p{i:04d}" for i in range(n)])
    base = classification_metrics(scores, labels, label_names=NAMES, patient_ids=patients, n_bootstrap=300, seed=1)

    # Every image of every patient k times (as with several views per patient): the patients, and so the
    # uncertainty, are the same. An image-level bootstrap would see 5× the sample and shrink the CI by ≈ √5.
    repeated = np.repeat(np.arange(n), k)
    same_patients = classification_metrics(
        scores[repeated], labels[repeated], label_names=NAMES, patient_ids=patients[repeated], n_bootstrap=300, seed=1
    )
    assert same_patients["mean_auroc"] == pytest.approx(base["mean_auroc"])
    assert same_patients["bootstrap"]["n_units"] == n
    np.testing.assert_allclose(same_patients["mean_auroc_ci95"], base["mean_auroc_ci95"], rtol=1e-12)
    np.testing.assert_allclose(same_patients["mean_auprc_ci95"], base["mean_auprc_ci95"], rtol=1e-12)

    # The same images as k× as many distinct patients: now the CI does narrow.
    more_patients = classification_metrics(
        scores[repeated], labels[repeated], label_names=NAMES, patient_ids=np.arange(n * k), n_bootstrap=300, seed=1
    )
    assert _width(more_patients["mean_auroc_ci95"]) < 0.7 * _width(base["mean_auroc_ci95"])


def test_patients_with_several_images_widen_the_interval():
    # Images of one patient share a patient effect, so they count for less than independent images.
    rng = np.random.default_rng(7)
    n_patients, per_patient = 200, 6
    patient = np.repeat(np.arange(n_patients), per_patient)
    label = (rng.random(n_patients) < 0.3).astype(np.float64)[patient]
    score = rng.normal(size=n_patients)[patient] + 0.3 * rng.normal(size=patient.size) + label
    kwargs = {"label_names": ["x"], "n_bootstrap": 400}
    by_patient = classification_metrics(score[:, None], label[:, None], patient_ids=patient, **kwargs)
    by_image = classification_metrics(score[:, None], label[:, None], patient_ids=None, **kwargs)
    assert by_image["bootstrap"]["unit"] == "image" and by_patient["bootstrap"]["unit"] == "patient"
    assert _width(by_patient["mean_auroc_ci95"]) > 1.5 * _width(by_image["mean_auroc_ci95"])


def test_resamples_without_both_label_values_are_skipped():
    scores, labels = _multilabel(60, seed=8)
    labels[:, 0] = 0.0
    labels[0, 0] = 1.0  # a single positive: absent from about 1/e of the resamples
    out = classification_metrics(scores, labels, label_names=NAMES, patient_ids=np.arange(60), n_bootstrap=400)
    used = out["bootstrap"]["n_used"]
    assert 200 < used["per_class"]["Atelectasis"] < 330
    assert used["per_class"]["Hernia"] == 400  # 40 % prevalence: never single-valued
    assert used["mean"] <= used["per_class"]["Atelectasis"]
    assert out["per_class"]["Atelectasis"]["auroc_ci95"] is not None


def test_single_label_accuracy_and_one_vs_rest():
    rng = np.random.default_rng(9)
    n, names = 600, ["Normal", "Pneumonia", "COVID-19"]
    classes = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[classes]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    out = classification_metrics(
        probs,
        classes,
        label_names=names,
        patient_ids=np.arange(n) // 2,
        problem_type="single_label_classification",
        n_bootstrap=300,
    )
    assert out["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == classes))
    assert out["accuracy_ci95"][0] <= out["accuracy"] <= out["accuracy_ci95"][1]
    assert out["bootstrap"]["n_used"]["accuracy"] == 300
    for c, name in enumerate(names):
        assert out["per_class"][name]["auroc"] == pytest.approx(roc_auc_score(classes == c, probs[:, c]))
        assert out["per_class"][name]["auprc"] == pytest.approx(average_precision_score(classes == c, probs[:, c]))
        assert out["per_class"][name]["n_pos"] == int((classes == c).sum())
    assert out["mean_auroc"] == pytest.approx(roc_auc_score(classes, probs, multi_class="ovr", average="macro"))


def test_deterministic_by_seed_and_json_serialisable():
    scores, labels = _multilabel(300, seed=10)
    patients = np.arange(300) // 3
    first = classification_metrics(scores, labels, label_names=NAMES, patient_ids=patients, n_bootstrap=100, seed=3)
    again = classification_metrics(scores, labels, label_names=NAMES, patient_ids=patients, n_bootstrap=100, seed=3)
    other = classification_metrics(scores, labels, label_names=NAMES, patient_ids=patients, n_bootstrap=100, seed=4)
    assert json.dumps(first) == json.dumps(again)
    assert first["mean_auroc_ci95"] != other["mean_auroc_ci95"]
    assert first["mean_auroc"] == other["mean_auroc"]
    assert json.loads(json.dumps(first)) == first
    assert set(first) == {
        "n_images",
        "mean_auroc",
        "mean_auroc_ci95",
        "mean_auprc",
        "mean_auprc_ci95",
        "accuracy",
        "accuracy_ci95",
        "per_class",
        "undefined",
        "bootstrap",
    }
    assert set(first["per_class"]["Effusion"]) == {"auroc", "auprc", "n_pos", "n_neg", "auroc_ci95", "auprc_ci95"}


def test_roc_curves_match_sklearn():
    scores, labels = _multilabel(200, seed=11)
    labels[::4, 0] = np.nan
    labels[:, 3] = 1.0
    curves = roc_curves(scores, labels, NAMES)
    assert set(curves) == {"Atelectasis", "Cardiomegaly", "Effusion"}  # Hernia has no negatives: no curve
    known = ~np.isnan(labels[:, 0])
    fpr, tpr, _ = roc_curve(labels[known, 0], scores[known, 0])
    np.testing.assert_array_equal(curves["Atelectasis"][0], fpr)
    np.testing.assert_array_equal(curves["Atelectasis"][1], tpr)

    classes = np.array([0, 1, 2, 1, 0, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 2]] * 0.8 + 0.2 / 3
    curves = roc_curves(probs, classes, ["a", "b", "c"], problem_type="single_label_classification")
    fpr, tpr, _ = roc_curve(classes == 1, probs[:, 1])
    np.testing.assert_array_equal(curves["b"][0], fpr)
    np.testing.assert_array_equal(curves["b"][1], tpr)


@pytest.mark.parametrize(
    ("scores", "labels", "kwargs", "message"),
    [
        (np.zeros(5), np.zeros(5), {}, r"\(N, C\)"),
        (np.zeros((5, 2)), np.zeros((5, 3)), {}, "shape"),
        (np.zeros((5, 2)), np.full((5, 2), 0.5), {}, "0, 1 or NaN"),
        (np.full((5, 2), np.nan), np.zeros((5, 2)), {}, "NaN"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"problem_type": "regression"}, "problem_type"),
        (np.zeros((5, 2)), np.array([0, 1, 2, 0, 1]), {"problem_type": "single_label_classification"}, r"\[0, 2\)"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"patient_ids": np.arange(4)}, "patient_ids"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"confidence": 1.5}, "confidence"),
        (np.zeros((0, 2)), np.zeros((0, 2)), {}, "no images"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"label_names": ["a", "a"]}, "unique"),
    ],
)
def test_bad_input_is_rejected(scores, labels, kwargs, message):
    kwargs = {"label_names": ["a", "b"], "patient_ids": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        classification_metrics(scores, labels, **kwargs)
