# An `evaluate` metric module: load it with `evaluate.load(cxr_vitmae.evaluation.evaluate_module_path())`, offline.
# evaluate copies this one file into its modules cache and imports it from there, so it must import the package
# absolutely (no relative imports) and keep its name equal to its folder's.
"""Chest X-ray classification metrics as an `evaluate` module: exactly what cxr-vitmae's metrics.json holds."""

import datasets
import evaluate

from cxr_vitmae.evaluation.metrics import MULTI_LABEL, SINGLE_LABEL, classification_metrics

_CITATION = ""

_DESCRIPTION = """\
Per-class AUROC and AUPRC (average precision), their macro means over the classes that have both label values, and
(single-label problems) top-1 accuracy, each with a percentile confidence interval from a patient-level bootstrap.
The result is the metrics part of the metrics.json that cxr-vitmae's recipes and `cxr-vitmae evaluate` write, computed
by the same function (`cxr_vitmae.evaluation.metrics.classification_metrics`): equal inputs, seed and settings give an
equal dict. A NaN multi-label reference is an unknown label: that image is left out of that class only.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (N, C) probabilities, one list of C floats per image: sigmoid outputs for multi-label problems,
        softmax outputs for single-label ones. Stored as float64, so float32 and float64 scores are kept exactly.
    references: multi-label: one list of C floats per image, each 0, 1 or NaN (unknown). Single-label: one integer
        class index per image (per-class metrics are then one-vs-rest).
    patient_ids: the patient id (a string) of each image; the bootstrap resamples patients. Leave it out to resample
        images instead, which is only right when every image comes from a different patient.
    label_names: the C class names, in column order (required).
    problem_type: "multi_label_classification" or "single_label_classification"; by default inferred from the
        references (lists: multi-label, integers: single-label).
    n_bootstrap: number of bootstrap resamples (default 1000; 0 gives no intervals).
    seed: seed of the resampling (default 0).
    confidence: coverage of the percentile intervals (default 0.95).
Returns:
    n_images, mean_auroc, mean_auroc_ci95, mean_auprc, mean_auprc_ci95, accuracy, accuracy_ci95, per_class
    ({name: {auroc, auprc, n_pos, n_neg, auroc_ci95, auprc_ci95}}), undefined (classes without AUROC) and bootstrap
    (unit, n_units, n_resamples, confidence, seed, n_used); missing values are None.
Examples:
    >>> import evaluate
    >>> from cxr_vitmae.evaluation import evaluate_module_path
    >>> metric = evaluate.load(evaluate_module_path())
    >>> result = metric.compute(predictions=[[0.9, 0.2], [0.1, 0.7], [0.8, 0.6], [0.3, 0.1]],
    ...     references=[[1, 0], [0, 1], [1, float("nan")], [0, 0]], patient_ids=["p1", "p1", "p2", "p3"],
    ...     label_names=["Effusion", "Nodule"], n_bootstrap=100)
    >>> result["mean_auroc"]
    1.0
"""

# Stored for the images of a call that gives no patient ids: the bootstrap then resamples images.
_NO_PATIENT = ""
_PATIENT = datasets.Value("string")
_FEATURES = [
    datasets.Features(
        {
            "predictions": datasets.Sequence(datasets.Value("float64")),
            "references": datasets.Sequence(datasets.Value("float64")),
            "patient_ids": _PATIENT,
        }
    ),
    datasets.Features(
        {
            "predictions": datasets.Sequence(datasets.Value("float64")),
            "references": datasets.Value("int64"),
            "patient_ids": _PATIENT,
        }
    ),
]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ChestXrayMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_FEATURES,
            codebase_urls=[],
            reference_urls=[],
        )

    def add_batch(self, *, predictions=None, references=None, patient_ids=None, **kwargs):
        """Add a batch of images: `predictions`, `references` and (optionally) `patient_ids`."""
        return super().add_batch(
            predictions=predictions, references=references, patient_ids=_patients(predictions, patient_ids), **kwargs
        )

    def compute(self, *, predictions=None, references=None, patient_ids=None, **kwargs):
        """The metrics of the images given here and those added before; keyword arguments as described below."""
        return super().compute(
            predictions=predictions, references=references, patient_ids=_patients(predictions, patient_ids), **kwargs
        )

    def _compute(self, predictions, references, patient_ids, label_names=None, problem_type=None, **options):
        if label_names is None:
            raise ValueError("label_names is required: the class names, in the order of the prediction columns")
        if problem_type is None:
            problem_type = MULTI_LABEL if references and isinstance(references[0], list) else SINGLE_LABEL
        known = [patient != _NO_PATIENT for patient in patient_ids]
        if any(known) and not all(known):
            raise ValueError("patient_ids must give a (non-empty) patient id for every image, or be left out")
        return classification_metrics(
            predictions,
            references,
            label_names=label_names,
            patient_ids=patient_ids if any(known) else None,
            problem_type=problem_type,
            **options,
        )


def _patients(predictions, patient_ids):
    """Patient ids left out: the no-patient marker for every image (evaluate refuses None in a string column)."""
    if patient_ids is None and predictions is not None:
        return [_NO_PATIENT] * len(predictions)
    return patient_ids
