"""The example schema every cxr-vitmae corpus shares (see the contract's "Datasets" section)."""

from dataclasses import dataclass
from pathlib import Path

import datasets

from .errors import CorpusError


@dataclass(frozen=True)
class ImageRecord:
    """One image of a corpus as its metadata describe it, before anything is decoded.

    `labels` follows the corpus's `label_names` order (NaN = unknown); `label` is the class index of single-label
    corpora (COVIDx), else None.
    """

    path: Path
    image_id: str
    patient_id: str
    view: str
    labels: tuple[float, ...] = ()
    label: int | None = None

    def example(self) -> dict:
        """The record as a `classification_features` example (the image as its path; datasets reads it lazily)."""
        example = {
            "image": str(self.path),
            "labels": list(self.labels),
            "image_id": self.image_id,
            "patient_id": self.patient_id,
            "view": self.view,
        }
        if self.label is not None:
            example["label"] = self.label
        return example


class RecordCorpusBuilder(datasets.GeneratorBasedBuilder):
    """A labelled corpus whose reader gives `{split: [ImageRecord]}`: the split and example generators the
    single-reader corpora (CheXpert, MIMIC-CXR, COVIDx) share; subclasses say how their corpus is read
    (`read_records`)."""

    def read_records(self) -> dict[str, list[ImageRecord]]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        if not self.config.data_dir:
            raise CorpusError(f"{self.dataset_name} needs data_dir: the folder holding the corpus as distributed")
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"records": records})
            for split, records in self.read_records().items()
        ]

    def _generate_examples(self, records: list[ImageRecord]):
        for record in records:
            yield record.image_id, record.example()


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
