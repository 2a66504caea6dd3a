"""MIMIC-CXR-JPG (2.0.0 / 2.1.0, PhysioNet) read exactly as distributed.

Layout under `data_dir`::

    files/pNN/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg     (or another folder name, e.g. the paper's files_resized_320)
    mimic-cxr-2.0.0-metadata.csv.gz                  per image: dicom_id, subject_id, study_id, ViewPosition, ...
    mimic-cxr-2.0.0-split.csv.gz                     per image: dicom_id, study_id, subject_id, split
    mimic-cxr-2.0.0-chexpert.csv.gz / -negbio.csv.gz per study: subject_id, study_id + 14 label columns
    mimic-cxr-2.1.0-test-set-labeled.csv             (2.1.0 only) per study: study_id + 14 radiologist labels

Labels are per study and joined to the images on (subject_id, study_id); the split and the view are per image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from .builder import CorpusConfig, RecordCorpusBuilder
from .errors import CorpusError
from .label_policy import BLANK_VALUES, UNCERTAINTY_VALUES, apply_policies, parse_label_cells, policy_values
from .label_vocabulary import canonical_label
from .schema import ImageRecord, classification_features
from .validation import check_images, first_few

logger = logging.getLogger(__name__)

# The CheXpert labeler's 14 observations, in the column order of mimic-cxr-2.0.0-chexpert.csv.gz and -negbio.csv.gz
# (alphabetical there, unlike CheXpert's own CSV). Columns are selected by name, so a file in another order still
# reads correctly; this tuple is the order of our `labels` vectors.
MIMIC_CXR_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
LABEL_FILES = {"chexpert": "mimic-cxr-2.0.0-chexpert.csv.gz", "negbio": "mimic-cxr-2.0.0-negbio.csv.gz"}
RADIOLOGIST_TEST_FILE = "mimic-cxr-2.1.0-test-set-labeled.csv"

# The split file's names -> the split names every cxr-vitmae corpus uses.
SPLIT_NAMES = {"train": "train", "validate": "validation", "test": "test"}


@dataclass
class MIMICCXRConfig(CorpusConfig):
    """Options of `mimic-cxr` (none of them comes from the paper, which used MIMIC only unlabelled for pre-training,
    except `views` = AP/PA and `images_folder`, whose alternative `files_resized_320` is the paper's folder).

    Attributes:
        images_folder: the folder under `data_dir` holding `pNN/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg` ("files" as
            distributed).
        labeler: "chexpert" (default) or "negbio": which per-study label file supplies the labels.
        views: `ViewPosition` values to keep (upper-case; default ("AP", "PA"), the frontal views), or "all", which
            also keeps images whose ViewPosition is missing (their `view` is "").
        uncertainty: what an uncertain (-1) label becomes: "ignore" (NaN, masked out of the loss and the metrics),
            "zeros" or "ones"; one policy for all classes or a mapping label -> policy (classes it leaves out get
            "ignore"). Default "ignore" (ours: MIMIC has no paper recipe, and masking never invents a label).
        blank: what an unmentioned (blank) label becomes: "zeros" (default) or "ignore" (NaN); one policy or a
            mapping label -> policy (classes it leaves out get "zeros"). The default is ours, chosen to match the
            CheXpert builder's paper default (blank -> 0): a finding the report does not mention is read as absent.
        unlabeled_studies: what happens to images of a study that has no row in the label file (the chexpert file
            lacks a handful): "nan" (default: all 14 labels NaN, the images are kept) or "error" (CorpusError naming
            the count and the first studies).
        test_labels: labels of the test split. "radiologist": the 2.1.0 radiologist file (required); the test split
            is then the images of the studies it labels, the other test images are left out (their count is logged).
            "labeler": the labeler file, like the other splits. "auto" (default): "radiologist" when
            `mimic-cxr-2.1.0-test-set-labeled.csv` is present, else "labeler".
    """

    images_folder: str = "files"
    labeler: str = "chexpert"
    views: tuple[str, ...] | str = ("AP", "PA")
    uncertainty: str | Mapping[str, str] = "ignore"
    blank: str | Mapping[str, str] = "zeros"
    unlabeled_studies: str = "nan"
    test_labels: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        if self.labeler not in LABEL_FILES:
            raise CorpusError(f"mimic-cxr option labeler={self.labeler!r}: expected one of {', '.join(LABEL_FILES)}")
        if self.unlabeled_studies not in ("nan", "error"):
            raise CorpusError(
                f"mimic-cxr option unlabeled_studies={self.unlabeled_studies!r}: expected 'nan' or 'error'"
            )
        if self.test_labels not in ("auto", "radiologist", "labeler"):
            raise CorpusError(
                f"mimic-cxr option test_labels={self.test_labels!r}: expected 'auto', 'radiologist' or 'labeler'"
            )
        if isinstance(self.views, str):
            if self.views.lower() != "all":
                raise CorpusError(
                    f"mimic-cxr option views={self.views!r}: expected 'all' or a list of ViewPosition values"
                )
            self.views = "all"
        else:
            self.views = tuple(str(view).strip().upper() for view in self.views)
            if not self.views:
                raise CorpusError("mimic-cxr option views is empty: expected 'all' or a list of ViewPosition values")
        # Resolved now so that a bad policy fails when the builder is made, not after the CSVs are read.
        self.uncertainty_values()
        self.blank_values()

    def split_sources(self) -> dict[str, str]:
        """Split -> what it is read from (recorded in metrics.json and model cards)."""
        test = {
            "auto": f"split 'test' of {SPLIT_FILE}, labelled by {RADIOLOGIST_TEST_FILE} when present",
            "radiologist": f"the studies of {RADIOLOGIST_TEST_FILE} in split 'test' of {SPLIT_FILE}",
            "labeler": f"split 'test' of {SPLIT_FILE}",
        }[self.test_labels]
        return {
            "train": f"split 'train' of {SPLIT_FILE}",
            "validation": f"split 'validate' of {SPLIT_FILE}",
            "test": test,
        }

    def uncertainty_values(self) -> np.ndarray:
        """Per class (in `MIMIC_CXR_LABELS` order), the value an uncertain label becomes."""
        return policy_values(self.uncertainty, UNCERTAINTY_VALUES, "ignore", "uncertainty", MIMIC_CXR_LABELS)

    def blank_values(self) -> np.ndarray:
        """Per class (in `MIMIC_CXR_LABELS` order), the value a blank label becomes."""
        return policy_values(self.blank, BLANK_VALUES, "zeros", "blank", MIMIC_CXR_LABELS)


def read_csv(path: Path, required: Sequence[str], rename: Callable[[str], str] | None = None) -> pd.DataFrame:
    """A CSV (gzip or plain) as strings, blanks kept as "", after checking that `required` columns are present
    (after `rename`, so that the expected-vs-found message speaks of the names we use)."""
    if not path.is_file():
        raise CorpusError(f"{path}: no such file (expected the MIMIC-CXR-JPG file as distributed)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise CorpusError(f"{path}: cannot be read as CSV ({error})") from error
    frame.columns = [str(column).strip() for column in frame.columns]
    if rename is not None:
        frame.columns = [rename(column) for column in frame.columns]
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise CorpusError(f"{path}: header mismatch; column(s) {duplicated} appear more than once")
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise CorpusError(
            f"{path}: header mismatch; expected columns {list(required)}, found {list(frame.columns)} "
            f"(missing {missing})"
        )
    for column in required:
        frame[column] = frame[column].str.strip()
    return frame


def read_split_table(data_dir: str | Path) -> pd.DataFrame:
    """The split file as distributed: one row per image (dicom_id, study_id, subject_id, split), split names as in
    the file (train / validate / test). The pre-training unions read it to know every evaluation image."""
    path = Path(data_dir) / SPLIT_FILE
    frame = read_csv(path, ["dicom_id", "study_id", "subject_id", "split"])
    unknown = ~frame["split"].isin(list(SPLIT_NAMES))
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise CorpusError(
            f"{path}: row {row + 2}, column 'split': unknown split {frame['split'].iloc[row]!r}; "
            f"expected one of {', '.join(SPLIT_NAMES)}"
        )
    duplicated = frame["dicom_id"].duplicated(keep=False)
    if duplicated.any():
        raise CorpusError(f"{path}: dicom_id listed more than once: {sorted(set(frame['dicom_id'][duplicated]))[:5]}")
    return frame[["dicom_id", "study_id", "subject_id", "split"]]


def image_path(images_dir: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    """`files/pNN/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg`, NN being the first two digits of the subject id."""
    return images_dir / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}" / f"{dicom_id}.jpg"


def _label_matrix(frame: pd.DataFrame, path: Path, config: MIMICCXRConfig) -> np.ndarray:
    """The 14 label columns of `frame` (raw strings) as floats under the uncertainty and blank policies."""
    raw = parse_label_cells(frame, MIMIC_CXR_LABELS, path)
    return apply_policies(raw, config.uncertainty_values(), config.blank_values())


def _read_label_file(
    path: Path, keys: Sequence[str], config: MIMICCXRConfig, rename: Callable[[str], str] | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """The key columns of a per-study label file and its labels under the config's policies."""
    frame = read_csv(path, [*keys, *MIMIC_CXR_LABELS], rename)
    duplicated = frame.duplicated(list(keys), keep=False)
    if duplicated.any():
        first = frame.loc[duplicated, list(keys)].iloc[0].tolist()
        raise CorpusError(f"{path}: more than one row for {dict(zip(keys, first, strict=True))}")
    return frame[list(keys)].reset_index(drop=True), _label_matrix(frame, path, config)


def _radiologist_column(name: str) -> str:
    # The radiologist file of 2.1.0 says "Airspace Opacity" for the labelers' "Lung Opacity" (and its spelling is
    # documented only by third parties), so its finding columns are matched through the shared canonicaliser, whose
    # canonical names include the 14 labeler names as spelled here; other columns (study_id) keep their name.
    try:
        return canonical_label(name)
    except CorpusError:
        return name


def _images_table(data_dir: Path) -> pd.DataFrame:
    """Metadata joined one-to-one to the split file on dicom_id, checked for consistency."""
    metadata_path = data_dir / METADATA_FILE
    metadata = read_csv(metadata_path, ["dicom_id", "subject_id", "study_id", "ViewPosition"])
    splits = read_split_table(data_dir)
    duplicated = metadata["dicom_id"].duplicated(keep=False)
    if duplicated.any():
        raise CorpusError(
            f"{metadata_path}: dicom_id listed more than once: {sorted(set(metadata['dicom_id'][duplicated]))[:5]}"
        )
    table = metadata[["dicom_id", "subject_id", "study_id", "ViewPosition"]].merge(
        splits, on="dicom_id", how="outer", suffixes=("", "_split"), indicator=True
    )
    for side, file_name in (("left_only", SPLIT_FILE), ("right_only", METADATA_FILE)):
        orphans = table.loc[table["_merge"] == side, "dicom_id"].tolist()
        if orphans:
            present = METADATA_FILE if side == "left_only" else SPLIT_FILE
            raise CorpusError(
                f"{len(orphans)} image(s) of {present} have no row in {data_dir / file_name}; first: "
                f"{first_few(orphans)}"
            )
    for key in ("subject_id", "study_id"):
        mismatch = table[key] != table[f"{key}_split"]
        if mismatch.any():
            row = table[mismatch].iloc[0]
            raise CorpusError(
                f"{data_dir / SPLIT_FILE}: dicom_id {row['dicom_id']} has {key} {row[f'{key}_split']}, "
                f"but {METADATA_FILE} says {row[key]}"
            )
    # Whole patients, all views: a patient may not be in two splits even through images we do not keep.
    patient_splits = table.groupby("subject_id")["split"].nunique()
    shared = patient_splits[patient_splits > 1].index.tolist()
    if shared:
        raise CorpusError(
            f"{data_dir / SPLIT_FILE}: {len(shared)} patient(s) appear in more than one split; first: "
            f"{first_few(shared)}"
        )
    table["ViewPosition"] = table["ViewPosition"].str.strip().str.upper()
    return table.drop(columns=["subject_id_split", "study_id_split", "_merge"])


def read_splits(data_dir: str | Path, config: MIMICCXRConfig) -> dict[str, list[ImageRecord]]:
    """All validation of `mimic-cxr`, then its images per split (train / validation / test) as `ImageRecord`s in the
    metadata file's order. Raises CorpusError for any departure from the distributed layout."""
    data_dir = Path(data_dir).absolute()
    table = _images_table(data_dir)

    label_path = data_dir / LABEL_FILES[config.labeler]
    label_keys, labels = _read_label_file(label_path, ["subject_id", "study_id"], config)
    table = table.merge(
        label_keys.assign(_label_row=np.arange(len(label_keys))), on=["subject_id", "study_id"], how="left"
    )

    radiologist_path = data_dir / RADIOLOGIST_TEST_FILE
    test_labels = config.test_labels
    if test_labels == "auto":
        test_labels = "radiologist" if radiologist_path.is_file() else "labeler"
    if test_labels == "radiologist":
        if not radiologist_path.is_file():
            raise CorpusError(
                f"{radiologist_path}: no such file (test_labels='radiologist' needs MIMIC-CXR-JPG 2.1.0's "
                "radiologist-labelled test set; use test_labels='labeler' for the labeler's test labels)"
            )
        gold_keys, gold_labels = _read_label_file(radiologist_path, ["study_id"], config, _radiologist_column)
        study_splits = table.drop_duplicates("study_id").set_index("study_id")["split"]
        gold_split = gold_keys["study_id"].map(study_splits)
        unknown = gold_split.isna()
        if unknown.any():
            raise CorpusError(
                f"{radiologist_path}: {int(unknown.sum())} study(ies) have no image in {METADATA_FILE}; first: "
                f"{first_few(gold_keys['study_id'][unknown].tolist())}"
            )
        outside = gold_split != "test"
        if outside.any():
            first = first_few(gold_keys["study_id"][outside].tolist())
            raise CorpusError(
                f"{radiologist_path}: {int(outside.sum())} radiologist-labelled study(ies) are not in the test split "
                f"of {SPLIT_FILE} (evaluating on them would test on training data); first: {first}"
            )
        table = table.merge(gold_keys.assign(_gold_row=np.arange(len(gold_keys))), on="study_id", how="left")
        is_test = table["split"] == "test"
        left_out = is_test & table["_gold_row"].isna()
        if left_out.any():
            # A warning, not an error: this is what the radiologist labels mean, but it shrinks the official split.
            logger.warning(
                "mimic-cxr: test split restricted to the %d radiologist-labelled studies; %d test image(s) of other "
                "studies left out",
                len(gold_keys),
                int(left_out.sum()),
            )
        table = table[~left_out]

    if config.views != "all":
        table = table[table["ViewPosition"].isin(config.views)]

    unlabeled = table["_label_row"].isna()
    if test_labels == "radiologist":
        unlabeled &= table["split"] != "test"
    if unlabeled.any() and config.unlabeled_studies == "error":
        studies = table.loc[unlabeled, "study_id"].drop_duplicates().tolist()
        raise CorpusError(
            f"{label_path}: {len(studies)} study(ies) of the selected images have no label row "
            f"(unlabeled_studies='error'); first: {first_few(studies)}"
        )
    if unlabeled.any():
        logger.info("mimic-cxr: %d image(s) of studies without labels get all-NaN labels", int(unlabeled.sum()))

    images_dir = data_dir / config.images_folder
    records: dict[str, list[ImageRecord]] = {}
    for file_split, split in SPLIT_NAMES.items():
        rows = table[table["split"] == file_split]
        if rows.empty:
            views = "all views" if config.views == "all" else f"views {', '.join(config.views)}"
            raise CorpusError(f"{data_dir / SPLIT_FILE}: split {file_split!r} has no image with {views}")
        use_gold = split == "test" and test_labels == "radiologist"
        source_rows = rows["_gold_row"] if use_gold else rows["_label_row"]
        source = gold_labels if use_gold else labels
        split_records = []
        for row, source_row in zip(rows.itertuples(index=False), source_rows, strict=True):
            vector = (
                np.full(len(MIMIC_CXR_LABELS), np.nan, dtype=np.float32)
                if pd.isna(source_row)
                else source[int(source_row)]
            )
            split_records.append(
                ImageRecord(
                    path=image_path(images_dir, row.subject_id, row.study_id, row.dicom_id),
                    image_id=row.dicom_id,
                    patient_id=row.subject_id,
                    view=row.ViewPosition,
                    labels=tuple(float(value) for value in vector),
                )
            )
        records[split] = split_records
    check_images(
        (record.path for split_records in records.values() for record in split_records),
        f"{data_dir / METADATA_FILE} (under {images_dir})",
    )
    return records


class MIMICCXR(RecordCorpusBuilder):
    """MIMIC-CXR-JPG: 14 CheXpert-labeler observations per study, train / validation / test from the split file."""

    BUILDER_CONFIG_CLASS = MIMICCXRConfig
    VERSION = datasets.Version("1.0.0")

    @classmethod
    def label_names(cls, data_dir: str | Path | None = None, **options) -> list[str]:
        cls.BUILDER_CONFIG_CLASS(**options)
        return list(MIMIC_CXR_LABELS)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="MIMIC-CXR-JPG chest radiographs with per-study labels (CheXpert or NegBio labeler).",
            features=classification_features(MIMIC_CXR_LABELS),
        )

    def read_records(self) -> dict[str, list[ImageRecord]]:
        return read_splits(self.config.data_dir, self.config)
