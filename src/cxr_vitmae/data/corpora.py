"""The corpus registry: every fact about a corpus that is not in its files, in one place, and the one options checker.

Each `Corpus` says which builder reads it, the short names it goes by (`--labels nih`), which image corpora it draws
from (the pre-training unions draw from several), which data-use agreement forbids redistributing its images, how a
model card names and describes it, and the labels of a classifier trained on it. The builders, the converters and
`hub/` (cards, upload set) all read it from here.
"""

import importlib
import json
from dataclasses import dataclass, fields
from typing import Any

import datasets

from ..models.chest_xray_labels import CHEXPERT_COMPETITION_LABELS, COVIDX_LABELS, NIH_CHESTXRAY14_LABELS
from .builder import CorpusBuilder
from .errors import CorpusError


@dataclass(frozen=True)
class Corpus:
    """One corpus as this package knows it (the facts of the corpus as distributed, not of any run)."""

    name: str
    builder: str  # "module:Class" inside cxr_vitmae.data
    display_name: str
    description: str
    aliases: tuple[str, ...] = ()
    # The image corpora it draws from; empty when only itself.
    sources: tuple[str, ...] = ()
    # The agreement that forbids sharing its images (and any image derived from them), as a reader would name it.
    restricted_by: str | None = None
    # The default labels of a classifier trained on it (the paper's released heads), and whether they are exclusive.
    classifier_labels: tuple[str, ...] = ()
    single_label: bool = False
    # The user's own radiographs (patient data): nothing derived from them, no identifier and no local path is ever
    # published, and cards name the data by its table and split policy, never as a public corpus.
    own_data: bool = False

    @property
    def image_sources(self) -> tuple[str, ...]:
        """The corpora whose images it holds, which model cards list as their `datasets`."""
        return self.sources or (self.name,)


OWN_DATA_RESTRICTION = "the user's own data (patient data)"

_CORPORA = (
    Corpus(
        name="nih-chestxray14",
        builder="nih:NIHChestXray14",
        display_name="NIH ChestX-ray14",
        description=(
            "112,120 frontal radiographs of 30,805 patients from the NIH Clinical Center (Wang et al., CVPR 2017); 14 "
            "findings text-mined from the radiology reports. Test split: the official `test_list.txt` (25,596 "
            "images); validation: carved patient-disjoint from `train_val_list.txt` with a fixed seed, or given split "
            "files."
        ),
        aliases=("nih",),
        classifier_labels=NIH_CHESTXRAY14_LABELS,
    ),
    Corpus(
        name="chexpert",
        builder="chexpert:CheXpert",
        display_name="CheXpert",
        description=(
            "CheXpert v1.0 (Irvin et al., AAAI 2019), Stanford Hospital: train.csv has 223,414 images of 64,540 "
            "patients labelled by the rule-based CheXpert report labeler (positive / negative / uncertain / blank). "
            "Results are reported on `valid.csv` (234 images, radiologist consensus), the set the paper reports on, "
            "with validation carved patient-disjoint from train.csv, or on CheXlocalize's test set when asked for."
        ),
        restricted_by="CheXpert (Stanford Research Use Agreement)",
        classifier_labels=CHEXPERT_COMPETITION_LABELS,
    ),
    Corpus(
        name="mimic-cxr",
        builder="mimic:MIMICCXR",
        display_name="MIMIC-CXR-JPG",
        description=(
            "MIMIC-CXR-JPG (Johnson et al., 2019; PhysioNet, credentialed access), Beth Israel Deaconess Medical "
            "Center: 377,110 images from 227,827 studies; labels are per study, from the CheXpert or NegBio report "
            "labeler; splits from the official split file."
        ),
        aliases=("mimic",),
        restricted_by="MIMIC-CXR (PhysioNet credentialed data use agreement)",
    ),
    Corpus(
        name="covidx",
        builder="covidx:COVIDx",
        display_name="COVIDx CXR",
        description=(
            "COVIDx CXR (COVID-Net), a compilation of several public collections with different sources and "
            "acquisition; one label per image (normal / pneumonia / COVID-19 for V9A, negative / positive otherwise). "
            "Test: the distributed test file; validation: CXR-4's val.txt, or for V9A / V9B carved patient-disjoint "
            "from the train file with a fixed seed."
        ),
        classifier_labels=COVIDX_LABELS,
        single_label=True,
    ),
    Corpus(
        name="pretrain-0.3m",
        builder="pretrain:Pretrain03M",
        display_name="X-rays 0.3M (NIH ChestX-ray14 + CheXpert)",
        description=(
            "The paper's pre-training union: NIH ChestX-ray14 training images and CheXpert frontal training images "
            "(266,340 images in the paper); labels unused."
        ),
        sources=("nih-chestxray14", "chexpert"),
    ),
    Corpus(
        name="pretrain-0.5m",
        builder="pretrain:Pretrain05M",
        display_name="X-rays 0.5M (NIH ChestX-ray14 + CheXpert + MIMIC-CXR)",
        description=(
            "The paper's larger pre-training union: X-rays 0.3M plus MIMIC-CXR-JPG AP/PA training images; labels "
            "unused."
        ),
        sources=("nih-chestxray14", "chexpert", "mimic-cxr"),
    ),
    Corpus(
        name="csv",
        builder="table:TableCorpus",
        display_name="own data (image folder and label table)",
        description=(
            "The user's own radiographs: a folder of PNG, JPEG or DICOM images and one table (CSV, TSV or Parquet) "
            "of their labels; splits from the table's split column or carved by patient with a fixed seed."
        ),
        restricted_by=OWN_DATA_RESTRICTION,
        own_data=True,
    ),
    Corpus(
        name="folder",
        builder="folder:FolderCorpus",
        display_name="own data (unlabelled image folder)",
        description="The user's own unlabelled radiographs: every PNG, JPEG and DICOM image under a folder.",
        restricted_by=OWN_DATA_RESTRICTION,
        own_data=True,
    ),
    Corpus(
        name="hf",
        builder="hf_dataset:HFDatasetCorpus",
        display_name="own data (a Hugging Face dataset)",
        description=(
            "A Hugging Face dataset (a Hub dataset repository or a local save_to_disk, imagefolder or parquet "
            "folder) with the user's column choices; its own splits, validation carved by patient where absent."
        ),
        restricted_by=OWN_DATA_RESTRICTION,
        own_data=True,
    ),
)
CORPORA: dict[str, Corpus] = {entry.name: entry for entry in _CORPORA}
_BY_ALIAS = {alias: entry for entry in _CORPORA for alias in entry.aliases}
# Corpora a classifier head can be labelled after (`cxr-vitmae convert --labels`), by every name they go by.
CLASSIFIER_LABEL_NAMES = tuple(
    sorted(name for entry in _CORPORA if entry.classifier_labels for name in (entry.name, *entry.aliases))
)


def corpus(name: str) -> Corpus:
    """The corpus called `name` (or one of its aliases); CorpusError naming the known ones otherwise."""
    if name in CORPORA:
        return CORPORA[name]
    if name in _BY_ALIAS:
        return _BY_ALIAS[name]
    raise CorpusError(f"Unknown corpus {name!r}; expected one of {', '.join(CORPORA)}")


def builder_class(name: str) -> type[CorpusBuilder]:
    """The `datasets` builder of corpus `name`, imported on first use so `import cxr_vitmae.data` stays cheap."""
    module, class_name = corpus(name).builder.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), class_name)


def uses_own_data(name: str, options: dict[str, Any]) -> bool:
    """Whether corpus `name` with `options` holds the user's own images (patient data): an own-data corpus, or a
    pre-training union with the user's `folders` added."""
    return corpus(name).own_data or bool(options.get("folders"))


# BuilderConfig's own fields, which are not corpus options.
_BUILDER_FIELDS = {field.name for field in fields(datasets.BuilderConfig)}


def corpus_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` checked against the fields of corpus `name`'s builder config, with its aliases applied (e.g.
    COVIDx's `version`, which cannot be a field name because every BuilderConfig has a `version` of its own)."""
    cls = builder_class(name)
    aliases = cls.OPTION_ALIASES
    options = {aliases.get(key, key): value for key, value in options.items()}
    allowed = {field.name for field in fields(cls.BUILDER_CONFIG_CLASS)} - _BUILDER_FIELDS
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise CorpusError(
            f"{name} has no option {', '.join(unknown)}; its options are {', '.join(sorted(allowed | set(aliases)))}"
        )
    return options


def config_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every option of corpus `name` as its builder config normalises it, in JSON types (so that options compare
    equal after a round trip through a JSON file)."""
    config = builder_class(name).BUILDER_CONFIG_CLASS(**corpus_options(name, options))
    values = {field.name: getattr(config, field.name) for field in fields(config) if field.name not in _BUILDER_FIELDS}
    as_json = json.dumps(values, default=lambda v: sorted(v) if isinstance(v, (set, frozenset)) else str(v))
    return json.loads(as_json)


__all__ = [
    "CLASSIFIER_LABEL_NAMES",
    "CORPORA",
    "Corpus",
    "builder_class",
    "config_options",
    "corpus",
    "corpus_options",
    "uses_own_data",
]
