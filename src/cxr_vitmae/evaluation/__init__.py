"""Evaluation metrics: per-class AUROC / AUPRC, accuracy, and patient-level bootstrap confidence intervals."""

from .metrics import MULTI_LABEL, SINGLE_LABEL, classification_metrics, roc_curves

__all__ = ["MULTI_LABEL", "SINGLE_LABEL", "classification_metrics", "roc_curves"]
