"""The paper's MAE pre-training unions, unlabelled, with no evaluation image in them.

- `pretrain-0.3m`: NIH ChestX-ray14 train + CheXpert train (frontal views).
- `pretrain-0.5m`: the same + MIMIC-CXR-JPG train (AP and PA views).

Each part is read by its own corpus module's `read_splits` (so every check of that corpus applies) and only its
`train` split enters. The builder then asserts, from the same metadata, that no evaluation image enters: none of
NIH's test or validation images, CheXpert's valid or test images, or MIMIC's validate or test images (every view,
from the split file), compared by path, by image id and by patient. A violation is a CorpusError.

"CheXpert train" is all of train.csv (the paper's), not the `chexpert` train split, which lacks the validation
patients carved for fine-tuning; valid.csv, the split CheXpert results are reported on, stays out.

"NIH train" is our `nih-chestxray14` train split: train_val_list.txt minus the validation patients carved with
the NIH builder's fixed seed. The paper used medical_mae's `train_official.txt` (75,312 images); pass
`nih_options={"split_files_dir": ...}` with those split files to get exactly that set.

Directory convention (ours): `data_dir` holds one folder per corpus, `nih/`, `chexpert/` and `mimic/`, each laid
out as that corpus's own builder expects its `data_dir`. `nih_dir`, `chexpert_dir` and `mimic_dir` override them
(absolute, or relative to `data_dir`). Examples carry `source` (the corpus name) and `image_id` / `patient_id`
prefixed with it (`chexpert/train/patient00001/study1/view1_frontal.jpg`), so ids are unique across corpora.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from . import chexpert, metadata_fingerprint, mimic, nih
from .builder import CorpusBuilder, CorpusConfig
from .errors import CorpusError
from .folder import FolderConfig, FolderCorpus, read_folder
from .phantoms import phantom_record
from .schema import ImageRecord, pretraining_features
from .validation import first_few

NIH, CHEXPERT, MIMIC = "nih-chestxray14", "chexpert", "mimic-cxr"
DEFAULT_FOLDERS = {NIH: "nih", CHEXPERT: "chexpert", MIMIC: "mimic"}


@dataclass
class PretrainConfig(CorpusConfig):
    """Options of `pretrain-0.3m` and `pretrain-0.5m` (paths and per-corpus options; see the module docstring).

    Attributes:
        nih_dir, chexpert_dir, mimic_dir: each corpus's data_dir (absolute, or relative to `data_dir`); by default
            `data_dir/nih`, `data_dir/chexpert`, `data_dir/mimic`. `mimic_dir` is for `pretrain-0.5m` only.
        nih_options, chexpert_options, mimic_options: options of that corpus's builder, used to read it (defaults:
            the builders' own, i.e. the paper's choices for the union: CheXpert frontal views, MIMIC AP/PA; for the
            paper's NIH train set give `{"split_files_dir": <medical_mae data_splits/chestxray>}`). Options that
            change which images a split holds (views, split files) change the union accordingly.
        folders: the user's own image folders added to the union (absolute, or relative to `data_dir`), each read
            as the `folder` corpus reads one, with `folder_options` (`exclude`, `patients_from`); their images carry
            `source` "own/<folder name>".
    """

    nih_dir: str | None = None
    chexpert_dir: str | None = None
    mimic_dir: str | None = None
    nih_options: dict = field(default_factory=dict)
    chexpert_options: dict = field(default_factory=dict)
    mimic_options: dict = field(default_factory=dict)
    folders: tuple[str, ...] = ()
    folder_options: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        self.folders = (self.folders,) if isinstance(self.folders, str) else tuple(str(f) for f in self.folders)
        FolderConfig(**self.folder_options)  # checked now, not after the corpora are read

    def split_sources(self) -> dict[str, str]:
        own = f", plus {len(self.folders)} folder(s) of the user's own images" if self.folders else ""
        return {"train": f"the train split of each corpus in the union, none of their evaluation images{own}"}

    def corpus_dir(self, corpus: str) -> Path:
        given = {NIH: self.nih_dir, CHEXPERT: self.chexpert_dir, MIMIC: self.mimic_dir}[corpus]
        if self.data_dir is None:
            raise CorpusError("the pre-training unions need data_dir (the folder holding nih/, chexpert/, mimic/)")
        return _resolve(self.data_dir, DEFAULT_FOLDERS[corpus] if given is None else given)


def _resolve(data_dir: str | Path, path: str | Path) -> Path:
    """`path` as given if absolute, else below `data_dir`; normalised (`..` removed), since the corpus builders keep
    the paths they are given and those end up in the dataset."""
    path = Path(path).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else Path(data_dir).absolute() / path))


@dataclass
class _Part:
    """One corpus of a union: the records that enter and everything that must not."""

    source: str
    train: list[ImageRecord]
    evaluation_paths: set[str]
    evaluation_ids: set[str]
    evaluation_patients: set[str]


def _key(path: Path) -> str:
    # Lexical, no file-system calls: both sides come from the same corpus folders, and 10^5-10^6 paths stay fast.
    return os.path.normpath(os.path.abspath(path))


def _part(source: str, splits: dict[str, list[ImageRecord]]) -> _Part:
    evaluation = [record for split, records in splits.items() if split != "train" for record in records]
    return _Part(
        source=source,
        train=splits["train"],
        evaluation_paths={_key(record.path) for record in evaluation},
        evaluation_ids={record.image_id for record in evaluation},
        evaluation_patients={record.patient_id for record in evaluation},
    )


def _nih_part(config: PretrainConfig) -> _Part:
    data_dir = config.corpus_dir(NIH)
    options = nih.NIHChestXray14Config(**config.nih_options)
    part = _part(NIH, nih.read_splits(data_dir, options))
    # The official test list is held out too: split files (medical_mae's) define their own test set, and one that
    # lists an official test image in train would otherwise bring it in.
    official_test = nih.official_test_patients(data_dir, options)
    part.evaluation_ids |= set(official_test)
    part.evaluation_patients |= set(official_test.values())
    return part


def _chexpert_part(config: PretrainConfig) -> _Part:
    # All of train.csv, as the paper's union: the fine-tuning recipe's validation patients (carved from train.csv)
    # select checkpoints but are never reported on, and the reported split, valid.csv, stays out.
    options = chexpert.CheXpertConfig(**{"validation_fraction": 0.0, **config.chexpert_options})
    part = _part(CHEXPERT, chexpert.read_splits(config.corpus_dir(CHEXPERT), options))
    # image_id is the path below CheXpert-v1.0[-small]/: a train row pointing into valid/ or test/ is an evaluation
    # image even when that image's own row is filtered out (a lateral view, say).
    outside = [record.image_id for record in part.train if not record.image_id.startswith("train/")]
    if outside:
        raise CorpusError(
            f"{config.corpus_dir(CHEXPERT)}: {len(outside)} train.csv row(s) point outside train/ and would bring "
            f"evaluation images into the pre-training union; first: {first_few(outside)}"
        )
    return part


def _mimic_part(config: PretrainConfig) -> _Part:
    data_dir = config.corpus_dir(MIMIC)
    options = mimic.MIMICCXRConfig(**config.mimic_options)
    part = _part(MIMIC, mimic.read_splits(data_dir, options))
    # Every validate / test image of the split file, all views, whatever the options kept.
    table = mimic.read_split_table(data_dir)
    held_out = table[table["split"] != "train"]
    images_dir = data_dir / options.images_folder
    part.evaluation_ids |= set(held_out["dicom_id"])
    part.evaluation_patients |= set(held_out["subject_id"])
    part.evaluation_paths |= {
        _key(mimic.image_path(images_dir, subject, study, dicom))
        for subject, study, dicom in zip(
            held_out["subject_id"], held_out["study_id"], held_out["dicom_id"], strict=True
        )
    }
    return part


def _check_no_evaluation_image(name: str, parts: list[_Part]) -> None:
    all_evaluation_paths = set().union(*(part.evaluation_paths for part in parts))
    for part in parts:
        checks = (
            ("path", [str(record.path) for record in part.train if _key(record.path) in all_evaluation_paths]),
            ("image id", [record.image_id for record in part.train if record.image_id in part.evaluation_ids]),
            (
                "patient",
                sorted({record.patient_id for record in part.train if record.patient_id in part.evaluation_patients}),
            ),
        )
        for what, leaks in checks:
            if leaks:
                raise CorpusError(
                    f"{name}: {len(leaks)} {part.source} train image(s) share their {what} with an evaluation "
                    f"image (validation/test) and would leak into pre-training; first: "
                    f"{first_few(leaks)}"
                )


def _folder_part(config: PretrainConfig, folder: str) -> _Part:
    path = _resolve(config.data_dir, folder)
    records = read_folder(path, FolderConfig(**config.folder_options))
    return _Part(f"own/{path.name}", records, set(), set(), set())


def read_union(name: str, sources: tuple[str, ...], config: PretrainConfig) -> list[ImageRecord]:
    """The union's records (ids and patients prefixed with their source), after every check of every part and the
    no-evaluation-image assertion (which also keeps the corpora's evaluation images out of the user's folders)."""
    readers = {NIH: _nih_part, CHEXPERT: _chexpert_part, MIMIC: _mimic_part}
    parts = [readers[source](config) for source in sources]
    parts += [_folder_part(config, folder) for folder in config.folders]
    _check_no_evaluation_image(name, parts)
    union = [
        ImageRecord(
            path=record.path,
            image_id=f"{part.source}/{record.image_id}",
            patient_id=f"{part.source}/{record.patient_id}",
            view=record.view,
        )
        for part in parts
        for record in part.train
    ]
    repeated = [image_id for image_id, count in Counter(record.image_id for record in union).items() if count > 1]
    if repeated:
        raise CorpusError(f"{name}: image ids listed more than once: {first_few(repeated)}")
    return union


def _combined_hash(hash: str | None, data_dir: str | None, options: dict) -> str | None:
    """`load_cxr_dataset` fingerprints the metadata under data_dir only; corpora placed elsewhere join the hash."""
    if hash is None or data_dir is None:
        return hash
    base = _resolve(data_dir, ".")
    digest = hashlib.sha256(hash.encode())
    for key in ("nih_dir", "chexpert_dir", "mimic_dir"):
        if options.get(key) is None:
            continue
        path = _resolve(data_dir, options[key])
        if path.is_dir() and not path.is_relative_to(base):
            digest.update(f"{key}:{metadata_fingerprint(path)};".encode())
    # The user's folders are defined by their images, which the metadata fingerprint does not cover.
    folders = options.get("folders") or ()
    for folder in (folders,) if isinstance(folders, str) else folders:
        path = _resolve(data_dir, folder)
        if path.is_dir():
            digest.update(f"folder:{folder}:{metadata_fingerprint(path, FolderCorpus.FINGERPRINT_SUFFIXES)};".encode())
    return digest.hexdigest()[:16]


class _PretrainUnion(CorpusBuilder):
    BUILDER_CONFIG_CLASS = PretrainConfig
    VERSION = datasets.Version("1.0.0")
    CORPUS_NAME = ""
    SOURCES: tuple[str, ...] = ()

    def __init__(self, *args, hash: str | None = None, **kwargs):
        super().__init__(*args, hash=_combined_hash(hash, kwargs.get("data_dir"), kwargs), **kwargs)
        if MIMIC not in self.SOURCES and (self.config.mimic_dir is not None or self.config.mimic_options):
            raise CorpusError(
                f"{self.CORPUS_NAME} has no MIMIC-CXR part: mimic_dir and mimic_options are for pretrain-0.5m"
            )

    @classmethod
    def label_names(cls, data_dir: str | Path | None = None, **options) -> list[str]:
        cls.BUILDER_CONFIG_CLASS(**options)
        return []

    @classmethod
    def phantom_record(cls, data_dir: str | Path, **options) -> dict | None:
        """The union's record when any of its parts is a `cxr-vitmae phantoms` corpus (`None` when none is): the
        parts' own records under `parts`, and the image count of the synthetic ones."""
        config = cls.BUILDER_CONFIG_CLASS(data_dir=str(data_dir), **options)
        parts = {corpus: phantom_record(config.corpus_dir(corpus)) for corpus in cls.SOURCES}
        synthetic = [record for record in parts.values() if record is not None]
        if not synthetic:
            return None
        return {
            "generator": synthetic[0]["generator"],
            "num_images": sum(record["num_images"] for record in synthetic),
            "parts": parts,
        }

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=f"Unlabelled pre-training union: the train splits of {', '.join(self.SOURCES)}.",
            features=pretraining_features(),
        )

    def _split_generators(self, dl_manager):
        records = read_union(self.CORPUS_NAME, self.SOURCES, self.config)
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"records": records})]

    def _generate_examples(self, records):
        for record in records:
            example = record.example()
            del example["labels"]  # the unions are unlabelled
            source = record.image_id.split("/", 2 if record.image_id.startswith("own/") else 1)
            yield record.image_id, {**example, "source": "/".join(source[:-1])}


class Pretrain03M(_PretrainUnion):
    """`pretrain-0.3m`: NIH ChestX-ray14 train + CheXpert frontal train (the paper's ViT-S pre-training set)."""

    CORPUS_NAME = "pretrain-0.3m"
    SOURCES = (NIH, CHEXPERT)


class Pretrain05M(_PretrainUnion):
    """`pretrain-0.5m`: NIH ChestX-ray14 train + CheXpert frontal train + MIMIC-CXR train AP/PA (ViT-B's set)."""

    CORPUS_NAME = "pretrain-0.5m"
    SOURCES = (NIH, CHEXPERT, MIMIC)
