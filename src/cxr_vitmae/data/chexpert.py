"""CheXpert v1.0 (Irvin et al., AAAI 2019), full or `-small`, read exactly as Stanford distributes it.

Layout: `CheXpert-v1.0-small/` or `CheXpert-v1.0/` holding `train.csv`, `valid.csv` and
`{train,valid}/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg`. The CSVs' `Path` column starts with that folder's
name. `data_dir` may be the folder that contains the prefix folder, or the prefix folder itself.

Splits, by `test_split`:

- `"valid"` (default, comparable to the paper, whose CheXpert numbers are on valid.csv): `test` is valid.csv (234
  images, radiologist consensus, 0/1 only), `validation` is carved from train.csv by patient, exactly as NIH's is
  from train_val_list.txt (`validation_fraction` of the patients, ranked by SHA-256 of `"<validation_seed>:<patient>"`),
  and `train` is the rest of train.csv. A CheXlocalize test CSV next to the corpus is then not read.
- `"chexlocalize"`: `test` is CheXlocalize's test labels (`test_labels.csv` or `test.csv`: `Path` plus the 14 labels,
  no Sex/Age/Frontal/AP columns; 668 images from 500 patients, 5-radiologist consensus), `validation` is valid.csv and
  `train` all of train.csv. The CSV is looked for in the prefix folder, then in `data_dir`; its `Path` values
  (`test/patientNNNNN/...`, with or without the prefix) are resolved against the folder holding it. Having no
  Frontal/Lateral column, the test split's views come from the file names (`view1_frontal.jpg` → `FRONTAL`).

Label values are 1 (positive), 0 (negative), -1 (uncertain) and blank (not mentioned); anything else is an error.
The options turn them into the float32 `labels` vector (NaN = unknown, masked out of the loss):

- `uncertainty`: per class, `"ones"` (U-Ones), `"zeros"` (U-Zeros) or `"ignore"` (NaN). The default is the
  paper's (medical_mae, after LibAUC): U-Ones for Atelectasis and Edema, U-Zeros for Cardiomegaly, Consolidation
  and Pleural Effusion. A mapping overrides that default class by class; a single string applies to every class.
  Classes named nowhere (the non-competition ones under `tasks="all"`) get `"zeros"`, the paper's "U-Zeros for
  the rest". The same policy applies to every split: valid and test labels are documented as 0/1, so it matters
  only if a -1 appears there.
- `blank`: `"zeros"` (the paper's) or `"ignore"` (NaN, torchxrayvision's choice).

`image_id` is the `Path` without its `CheXpert-v1.0[-small]/` prefix (`train/patient00001/study1/view1_frontal.jpg`),
so that it is the same for the full and the small copy. `view` is the `AP/PA` value (AP, PA, LL, RL) when present,
else `FRONTAL` or `LATERAL`.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from ..models.chest_xray_labels import CHEXPERT_COMPETITION_LABELS
from .builder import CorpusConfig, RecordCorpusBuilder
from .errors import CorpusError
from .label_policy import BLANK_VALUES, UNCERTAINTY_VALUES, apply_policies, parse_label_cells, policy_values
from .label_vocabulary import canonical_label
from .nih import read_csv_strict
from .schema import ImageRecord, classification_features
from .validation import carve_validation_patients, check_fraction, check_images, check_patients_disjoint

# The 14 label columns in the order of train.csv / valid.csv.
CHEXPERT_LABELS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
CHEXPERT_PREFIXES = ("CheXpert-v1.0-small", "CheXpert-v1.0")
CSV_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS)
TEST_CSV_COLUMNS = ("Path", *CHEXPERT_LABELS)
TRAIN_CSV, VALID_CSV = "train.csv", "valid.csv"
TEST_FILES = ("test_labels.csv", "test.csv")
# test_split -> what each split is read from (recorded in metrics.json and model cards).
TEST_SPLITS = {
    "valid": {
        "train": "train.csv minus the carved validation patients",
        "validation": "patients carved from train.csv",
        "test": "valid.csv, the paper's CheXpert evaluation set",
    },
    "chexlocalize": {
        "train": "train.csv",
        "validation": "valid.csv",
        "test": "CheXlocalize's test labels, test_labels.csv",
    },
}

PAPER_UNCERTAINTY = {
    "Cardiomegaly": "zeros",
    "Edema": "ones",
    "Consolidation": "zeros",
    "Atelectasis": "ones",
    "Pleural Effusion": "zeros",
}
UNMENTIONED_UNCERTAINTY = "zeros"
UNCERTAINTY_POLICIES = ("ones", "zeros", "ignore")
BLANK_POLICIES = ("zeros", "ignore")
VIEW_GROUPS = ("all", "frontal", "lateral")
VIEW_VALUES = ("AP", "PA", "LL", "RL", "FRONTAL", "LATERAL")
TASKS = ("competition", "all")

_PATIENT = re.compile(r"patient\d+")


def _chexpert_label(name: str, option: str) -> str:
    """The CSV column naming finding `name` (aliases such as `Effusion` accepted)."""
    canonical = canonical_label(name)
    for label in CHEXPERT_LABELS:
        if canonical_label(label) == canonical:
            return label
    raise CorpusError(f"chexpert option {option}: {name!r} is not a CheXpert class; expected one of {CHEXPERT_LABELS}")


@dataclass
class CheXpertConfig(CorpusConfig):
    """Options of the `chexpert` corpus (module docstring for their meaning).

    Attributes:
        views: `"frontal"` (default, the paper's), `"lateral"`, `"all"`, or a list of view values among AP, PA, LL,
            RL, FRONTAL, LATERAL (e.g. `["AP", "PA"]`).
        tasks: `"competition"` (default: Cardiomegaly, Edema, Consolidation, Atelectasis, Pleural Effusion in the
            paper code's order) or `"all"` (the 14 CSV label columns in CSV order).
        uncertainty: `"ones"`, `"zeros"` or `"ignore"` for every class, or a mapping class → policy that overrides
            the paper's map (default) class by class; classes named nowhere get `"zeros"`.
        blank: `"zeros"` (default) or `"ignore"`.
        test_split: `"valid"` (default: test = valid.csv, validation carved from train.csv) or `"chexlocalize"`
            (test = CheXlocalize's test labels, validation = valid.csv).
        validation_fraction: share of train.csv's patients carved out as `validation` under `test_split="valid"`
            (0.1, as NIH's); 0 carves none (no validation split).
        validation_seed: seed of that carve (fixed, so that every run gets the same validation patients).
    """

    views: str | tuple[str, ...] = "frontal"
    tasks: str = "competition"
    uncertainty: str | dict[str, str] = field(default_factory=lambda: dict(PAPER_UNCERTAINTY))
    blank: str = "zeros"
    test_split: str = "valid"
    validation_fraction: float = 0.1
    validation_seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.views, str) and self.views.lower() in VIEW_GROUPS:
            self.views = self.views.lower()
        else:
            views = (self.views,) if isinstance(self.views, str) else tuple(self.views)
            views = tuple(str(view).upper() for view in views)
            if not views or any(view not in VIEW_VALUES for view in views):
                raise CorpusError(
                    f"chexpert option views={self.views!r}: expected one of {VIEW_GROUPS} or a list of {VIEW_VALUES}"
                )
            self.views = views
        if self.tasks not in TASKS:
            raise CorpusError(f"chexpert option tasks={self.tasks!r}: expected one of {TASKS}")
        if self.blank not in BLANK_POLICIES:
            raise CorpusError(f"chexpert option blank={self.blank!r}: expected one of {BLANK_POLICIES}")
        if self.test_split not in TEST_SPLITS:
            raise CorpusError(f"chexpert option test_split={self.test_split!r}: expected one of {tuple(TEST_SPLITS)}")
        check_fraction("chexpert", self.validation_fraction, self.validation_seed)
        if isinstance(self.uncertainty, str):
            if self.uncertainty not in UNCERTAINTY_POLICIES:
                raise CorpusError(
                    f"chexpert option uncertainty={self.uncertainty!r}: expected one of {UNCERTAINTY_POLICIES} "
                    "or a mapping class → policy"
                )
        elif isinstance(self.uncertainty, dict):
            normalised = {}
            for name, policy in self.uncertainty.items():
                if policy not in UNCERTAINTY_POLICIES:
                    raise CorpusError(
                        f"chexpert option uncertainty[{name!r}]={policy!r}: expected one of {UNCERTAINTY_POLICIES}"
                    )
                normalised[_chexpert_label(name, f"uncertainty[{name!r}]")] = policy
            self.uncertainty = normalised
        else:
            raise CorpusError(
                f"chexpert option uncertainty={self.uncertainty!r}: expected a policy name or a mapping class → policy"
            )

    def split_sources(self) -> dict[str, str]:
        """Split -> what it is read from (recorded in metrics.json and model cards)."""
        sources = dict(TEST_SPLITS[self.test_split])
        if self.test_split == "valid":
            sources["validation"] = (
                f"{self.validation_fraction:.0%} of train.csv's patients (seed {self.validation_seed})"
            )
        return sources

    def task_labels(self) -> tuple[str, ...]:
        return CHEXPERT_COMPETITION_LABELS if self.tasks == "competition" else CHEXPERT_LABELS

    def uncertainty_policy(self) -> dict[str, str]:
        """The effective policy of every CheXpert class."""
        if isinstance(self.uncertainty, str):
            return dict.fromkeys(CHEXPERT_LABELS, self.uncertainty)
        merged = {**PAPER_UNCERTAINTY, **self.uncertainty}
        return {label: merged.get(label, UNMENTIONED_UNCERTAINTY) for label in CHEXPERT_LABELS}


def resolve_root(data_dir: str | Path) -> Path:
    """The `CheXpert-v1.0[-small]` folder: `data_dir` itself or its one child of that name."""
    data_dir = Path(data_dir).absolute()
    if not data_dir.is_dir():
        raise CorpusError(f"{data_dir}: no such directory (expected the CheXpert corpus)")
    if any((data_dir / name).is_file() for name in (TRAIN_CSV, VALID_CSV)):
        return data_dir
    found = [data_dir / prefix for prefix in CHEXPERT_PREFIXES if (data_dir / prefix).is_dir()]
    if len(found) > 1:
        raise CorpusError(
            f"{data_dir}: holds both {' and '.join(CHEXPERT_PREFIXES)}; point data_dir at the one to read"
        )
    if not found:
        raise CorpusError(
            f"{data_dir}: neither train.csv / valid.csv nor a {' or '.join(CHEXPERT_PREFIXES)} folder holding them"
        )
    return found[0]


def _labels(frame: pd.DataFrame, path: Path, config: CheXpertConfig) -> np.ndarray:
    """The task's label columns under the config's uncertainty and blank policies."""
    labels = config.task_labels()
    policy = config.uncertainty_policy()
    return apply_policies(
        parse_label_cells(frame, labels, path),
        policy_values({label: policy[label] for label in labels}, UNCERTAINTY_VALUES, "zeros", "uncertainty", labels),
        policy_values(config.blank, BLANK_VALUES, "zeros", "blank", labels),
    )


def _keep(views: str | tuple[str, ...], orientation: str, view: str) -> bool:
    if isinstance(views, str):
        return views == "all" or views == orientation.lower()
    return view in views or orientation.upper() in views


def _relative(value: str, path: Path, line: int) -> tuple[list[str], bool]:
    """The parts of a `Path` value below the `CheXpert-v1.0[-small]` prefix, and whether it had that prefix."""
    parts = value.replace("\\", "/").split("/")
    prefixed = parts[0] in CHEXPERT_PREFIXES
    if prefixed:
        parts = parts[1:]
    if not value or value.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise CorpusError(f"{path}, line {line}, column 'Path': {value!r} is not a path inside the corpus")
    return parts, prefixed


def _read_split_csv(path: Path, root: Path, split: str, config: CheXpertConfig) -> list[ImageRecord]:
    """The records of one split CSV. A `Path` under the `CheXpert-v1.0[-small]/` prefix lies in the corpus folder
    `root` wherever the CSV is; one without it lies next to the CSV (a test CSV may sit beside the corpus folder)."""
    is_test = split == "test"
    expected = list(TEST_CSV_COLUMNS if is_test else CSV_COLUMNS)
    # Columns are selected by name, so their order may differ from the distributed one.
    frame = read_csv_strict(path, lambda header: header if sorted(header) == sorted(expected) else expected)
    if not len(frame):
        raise CorpusError(f"{path}: no rows (no image listed)")
    labels = _labels(frame, path, config)

    if is_test:
        if isinstance(config.views, tuple) and {"AP", "PA", "LL", "RL"} & set(config.views):
            raise CorpusError(
                f"{path}: has no AP/PA column, so views={list(config.views)} cannot select its images; use views "
                "'frontal', 'lateral' or 'all' (or FRONTAL / LATERAL)"
            )
        kinds = []
        for row, value in frame["Path"].items():
            match = re.search(r"_(frontal|lateral)\.[^./]+$", value, flags=re.IGNORECASE)
            if match is None:
                raise CorpusError(
                    f"{path}, line {row + 2}, column 'Path': {value!r} does not end in _frontal.<ext> or _lateral.<ext>"
                )
            kinds.append(match.group(1).capitalize())
        orientation = pd.Series(kinds, index=frame.index)
        position = pd.Series("", index=frame.index)
    else:
        orientation, position = frame["Frontal/Lateral"], frame["AP/PA"].str.upper()
        bad = ~orientation.isin(["Frontal", "Lateral"])
        if bad.any():
            row = bad.index[bad.to_numpy()][0]
            raise CorpusError(
                f"{path}, line {row + 2}, column 'Frontal/Lateral': {orientation[row]!r}; expected Frontal or Lateral"
            )
    view = position.where(position != "", orientation.str.upper())

    records, seen = [], {}
    rows = zip(frame.index, frame["Path"], orientation, view, labels.tolist(), strict=True)
    for row, value, kind, view_name, vector in rows:
        line = row + 2
        parts, prefixed = _relative(value, path, line)
        image_id = "/".join(parts)
        if image_id in seen:
            raise CorpusError(f"{path}, line {line}: {value} is listed twice (first on line {seen[image_id]})")
        seen[image_id] = line
        if _keep(config.views, kind, view_name):
            patient = next((part for part in parts if _PATIENT.fullmatch(part)), None)
            if patient is None:
                raise CorpusError(f"{path}, line {line}, column 'Path': no patientNNNNN folder in {value!r}")
            records.append(
                ImageRecord(
                    path=(root if prefixed else path.parent).joinpath(*parts),
                    image_id=image_id,
                    patient_id=patient,
                    view=view_name,
                    labels=tuple(vector),
                )
            )
    if not records:
        raise CorpusError(f"{path}: no image left after keeping views={config.views!r}")
    return records


def _test_csv(root: Path, data_dir: Path) -> Path | None:
    for folder in dict.fromkeys([root, data_dir]):
        for name in TEST_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def read_splits(data_dir: str | Path, config: CheXpertConfig | None = None) -> dict[str, list[ImageRecord]]:
    """The validated splits (`train`, `validation` unless carved empty, `test`) under `config` (module docstring).

    Everything is checked here, before any example is generated: headers, label values, paths, duplicate rows,
    patients shared between splits, empty splits, missing and unreadable images.

    Raises:
        CorpusError: naming the file, line or column and what was expected.
    """
    config = config if config is not None else CheXpertConfig()
    data_dir = Path(data_dir).absolute()
    root = resolve_root(data_dir)
    read = {}
    for split, name in (("train", TRAIN_CSV), ("valid", VALID_CSV)):
        if not (root / name).is_file():
            raise CorpusError(f"{root / name}: not found (the CheXpert {split} split)")
        read[split] = _read_split_csv(root / name, root, split, config)
    if config.test_split == "chexlocalize":
        test = _test_csv(root, data_dir)
        if test is None:
            raise CorpusError(
                f"chexpert option test_split='chexlocalize': no CheXlocalize test labels ({' or '.join(TEST_FILES)}) "
                f"in {root} or {data_dir}"
            )
        splits = {
            "train": read["train"],
            "validation": read["valid"],
            "test": _read_split_csv(test, root, "test", config),
        }
    else:
        carved = carve_validation_patients(
            (record.patient_id for record in read["train"]),
            config.validation_fraction,
            config.validation_seed,
            carved_from=str(root / TRAIN_CSV),
        )
        splits = {"train": [record for record in read["train"] if record.patient_id not in carved]}
        if carved:
            splits["validation"] = [record for record in read["train"] if record.patient_id in carved]
        splits["test"] = read["valid"]

    # Compared on the kept images, the ones that could leak into training.
    check_patients_disjoint(
        {split: {record.patient_id for record in records} for split, records in splits.items()}, str(root)
    )
    check_images([record.path for records in splits.values() for record in records], f"the CSV files of {root}")
    return splits


class CheXpert(RecordCorpusBuilder):
    """CheXpert v1.0: 224,316 radiographs of 65,240 patients, 14 labeller-extracted observations with uncertainty."""

    BUILDER_CONFIG_CLASS = CheXpertConfig
    VERSION = datasets.Version("1.0.0")

    @classmethod
    def label_names(cls, data_dir: str | Path | None = None, **options) -> list[str]:
        return list(cls.BUILDER_CONFIG_CLASS(**options).task_labels())

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=__doc__,
            features=classification_features(self.config.task_labels()),
            homepage="https://stanfordmlgroup.github.io/competitions/chexpert/",
            citation="Irvin et al., CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert "
            "Comparison, AAAI 2019.",
        )

    def read_records(self) -> dict[str, list[ImageRecord]]:
        return read_splits(self.config.data_dir, self.config)


__all__ = [
    "CHEXPERT_LABELS",
    "PAPER_UNCERTAINTY",
    "CheXpert",
    "CheXpertConfig",
    "read_splits",
    "resolve_root",
]
