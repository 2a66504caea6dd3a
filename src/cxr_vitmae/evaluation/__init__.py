"""Evaluation: metrics (per-class AUROC / AUPRC, accuracy, patient-level bootstrap CIs), predictions gathered across
processes, and the figures the recipes write."""

from .evaluate_metric import evaluate_module_path
from .figures import plot_reconstructions, plot_roc_curves, plot_training_curves
from .metrics import MULTI_LABEL, SINGLE_LABEL, classification_metrics, roc_curves

__all__ = [
    "MULTI_LABEL",
    "SINGLE_LABEL",
    "classification_metrics",
    "evaluate_module_path",
    "plot_reconstructions",
    "plot_roc_curves",
    "plot_training_curves",
    "roc_curves",
]
