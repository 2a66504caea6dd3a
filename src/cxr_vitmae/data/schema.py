"""The example schema every cxr-vitmae corpus shares (see the contract's "Datasets" section)."""

from dataclasses import dataclass
from pathlib import Path

import datasets


@dataclass(frozen=True)
class ImageRecord:
    """One image of a corpus as its metadata describe it, before anything is decoded.

    `labels` follows the corpus's `label_names` order (NaN = unknown); `label` is the class index of single-label
    corpora (COVIDx), else None. `path` is the image file, or, for a corpus that holds the images themselves (a
    Hugging Face dataset, `hf`), the undecoded `datasets.Image` cell `{"bytes", "path"}`, stored as it is.
    """

    path: Path | dict
    image_id: str
    patient_id: str
    view: str
    labels: tuple[float, ...] = ()
    label: int | None = None

    def example(self) -> dict:
        """The record as a `classification_features` example (the image as its path, or its cell; datasets reads it
        lazily)."""
        example = {
            "image": self.path if isinstance(self.path, dict) else str(self.path),
            "labels": list(self.labels),
            "image_id": self.image_id,
            "patient_id": self.patient_id,
            "view": self.view,
        }
        if self.label is not None:
            example["label"] = self.label
        return example


def classification_features(label_names: list[str] | tuple[str, ...], single_label: bool = False) -> datasets.Features:
    """`image`, `labels` (fixed-length float32 multi-hot, NaN = unknown), `image_id`, `patient_id`, `view`; single-label
    corpora add `label`, the class index."""
    features = {
        "image": datasets.Image(),
        "labels": datasets.Sequence(datasets.Value("float32"), length=len(label_names)),
        "image_id": datasets.Value("string"),
        "patient_id": datasets.Value("string"),
        "view": datasets.Value("string"),
    }
    if single_label:
        features["label"] = datasets.ClassLabel(names=list(label_names))
    return datasets.Features(features)


def pretraining_features() -> datasets.Features:
    """Unlabelled unions for MAE pre-training: no `labels`, and `source` names the corpus each image comes from."""
    return datasets.Features(
        {
            "image": datasets.Image(),
            "image_id": datasets.Value("string"),
            "patient_id": datasets.Value("string"),
            "view": datasets.Value("string"),
            "source": datasets.Value("string"),
        }
    )
