"""The `evaluate` metric module shipped with the package, loadable offline by its path."""

from pathlib import Path

__all__ = ["EVALUATE_MODULE_NAME", "evaluate_module_path"]

EVALUATE_MODULE_NAME = "chest_xray_metrics"


def evaluate_module_path() -> str:
    """The folder of the `evaluate` module that computes what metrics.json holds (per-class AUROC / AUPRC, their
    means and patient-bootstrap CIs): `evaluate.load(evaluate_module_path())` works without the Hub."""
    return str(Path(__file__).resolve().parent / EVALUATE_MODULE_NAME)
