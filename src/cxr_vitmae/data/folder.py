"""A user's own unlabelled radiographs for MAE pre-training (`folder`): every image under `data_dir`, recursively.

Images are the files with a PNG, JPEG or DICOM suffix (`.png`, `.jpg`, `.jpeg`, `.dcm`, `.dicom`), in any folder
structure; hidden files and folders are skipped; a single `train` split (pre-training reads nothing else). Options:

- `patients_from`: where a patient id comes from, for the exclusion list and the bookkeeping: `"image"` (default,
  each image its own patient), `"folder"` (the first folder below `data_dir`, as in `<patient>/<study>/<file>`
  exports), `"parent"` (the name of the folder holding the image: `<site>/<year>/<MRN>/<file>`) or `"dicom"` (the
  PatientID tag; every image must then be a DICOM file that has one);
- `exclude`: a text file (absolute, or relative to `data_dir`) of image or patient ids to keep out, one per line
  (`#` comments and blank lines skipped), e.g. the images a model will later be evaluated on, as the paper's unions
  keep NIH's test patients out. An image is excluded when its id (its path below `data_dir`), its file name, its
  file name without suffix or its patient id is listed. How many images were excluded, and how many listed ids
  matched nothing, is logged.

Every image is checked (present, readable, complete) before anything is built; an unreadable file is a CorpusError
naming it. `read_folder` is also what the paper's unions use to add the user's folders (`pretrain-0.3m`'s `folders`).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import datasets

from ..image_files import IMAGE_SUFFIXES, images_below
from .builder import CorpusConfig, RecordCorpusBuilder
from .errors import CorpusError
from .schema import ImageRecord, pretraining_features
from .validation import first_few, image_problem

logger = logging.getLogger(__name__)

PATIENT_SOURCES = ("image", "folder", "parent", "dicom")


@dataclass
class FolderConfig(CorpusConfig):
    """Options of `folder` (module docstring).

    Attributes:
        exclude: a file of image or patient ids to keep out (absolute, or relative to `data_dir`).
        patients_from: "image" (default), "folder", "parent" or "dicom".
    """

    exclude: str | None = None
    patients_from: str = "image"

    def __post_init__(self):
        super().__post_init__()
        if self.patients_from not in PATIENT_SOURCES:
            raise CorpusError(
                f"folder option patients_from={self.patients_from!r}: expected one of {', '.join(PATIENT_SOURCES)}"
            )

    def split_sources(self) -> dict[str, str]:
        kept = f" except the ids listed in {Path(self.exclude).name}" if self.exclude else ""
        return {"train": f"every PNG, JPEG and DICOM image under the folder{kept} (unlabelled)"}


def _patient(path: Path, data_dir: Path, patients_from: str) -> str:
    relative = path.relative_to(data_dir)
    if patients_from == "image":
        return relative.as_posix()
    if patients_from == "folder":
        if len(relative.parts) < 2:
            raise CorpusError(f"{path}: directly in {data_dir}, so it has no patient folder (patients_from='folder')")
        return relative.parts[0]
    if patients_from == "parent":
        if len(relative.parts) < 2:
            raise CorpusError(f"{path}: directly in {data_dir}, so it has no patient folder (patients_from='parent')")
        return relative.parent.name
    import pydicom  # the dicom extra; only this option needs it

    try:
        patient = str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"]).get("PatientID", ""))
    except Exception as error:  # pydicom raises many kinds for a file that is not DICOM
        raise CorpusError(f"{path}: cannot read its PatientID (patients_from='dicom'): {error}") from error
    if not patient.strip():
        raise CorpusError(f"{path}: no PatientID tag (patients_from='dicom')")
    return patient.strip()


def read_exclusions(path: Path) -> set[str]:
    if not path.is_file():
        raise CorpusError(f"{path}: no such file (option exclude: a list of image or patient ids, one per line)")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8-sig").splitlines())
    return {line for line in lines if line}


def read_folder(data_dir: str | Path, config: FolderConfig) -> list[ImageRecord]:
    """The folder's images as unlabelled records, after the exclusion list and every image check."""
    data_dir = Path(data_dir).absolute()
    if not data_dir.is_dir():
        raise CorpusError(f"{data_dir}: no such directory (expected a folder of radiographs)")
    paths = images_below(data_dir)
    if not paths:
        raise CorpusError(f"{data_dir}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it or below it")
    records = [
        ImageRecord(
            path=path,
            image_id=path.relative_to(data_dir).as_posix(),
            patient_id=_patient(path, data_dir, config.patients_from),
            view="",
        )
        for path in paths
    ]
    if config.exclude:
        exclude_path = Path(config.exclude).expanduser()
        exclude_path = exclude_path if exclude_path.is_absolute() else data_dir / exclude_path
        excluded_ids = read_exclusions(exclude_path)
        kept, matched = [], set()
        for record in records:
            keys = {record.image_id, record.path.name, record.path.stem, record.patient_id} & excluded_ids
            matched |= keys
            if not keys:
                kept.append(record)
        logger.warning(
            "folder %s: %d of %d image(s) excluded by %s; %d listed id(s) matched no image%s",
            data_dir,
            len(records) - len(kept),
            len(records),
            exclude_path,
            len(excluded_ids - matched),
            f" ({first_few(sorted(excluded_ids - matched))})" if excluded_ids - matched else "",
        )
        if not kept:
            raise CorpusError(f"{data_dir}: every image is excluded by {exclude_path}")
        records = kept
    problems = [(record.path, image_problem(record.path)) for record in records]
    problems = [(path, problem) for path, problem in problems if problem is not None]
    if problems:
        path, problem = problems[0]
        raise CorpusError(
            f"{len(problems)} image(s) under {data_dir} cannot be read; first: {path} is {problem}"
            + (f" (also {first_few([path for path, _ in problems[1:]])})" if len(problems) > 1 else "")
        )
    return records


class FolderCorpus(RecordCorpusBuilder):
    """`folder`: a user's unlabelled radiographs, for MAE pre-training (module docstring)."""

    BUILDER_CONFIG_CLASS = FolderConfig
    VERSION = datasets.Version("1.0.0")
    # The folder's content is its images: adding or replacing one must rebuild.
    FINGERPRINT_SUFFIXES = (*RecordCorpusBuilder.FINGERPRINT_SUFFIXES, *IMAGE_SUFFIXES)

    @classmethod
    def label_names(cls, data_dir: str | Path | None = None, **options) -> list[str]:
        cls.BUILDER_CONFIG_CLASS(**options)
        return []

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="A user's own unlabelled radiographs (every image under a folder).",
            features=pretraining_features(),
        )

    def read_records(self) -> dict[str, list[ImageRecord]]:
        return {"train": read_folder(self.config.data_dir, self.config)}

    def _generate_examples(self, records: list[ImageRecord]):
        for record in records:
            example = record.example()
            del example["labels"]  # unlabelled
            yield record.image_id, {**example, "source": "folder"}


__all__ = ["FolderConfig", "FolderCorpus", "read_folder"]
