"""The phantom corpus (`phantoms`) written in the exact on-disk layouts of CheXpert, MIMIC-CXR-JPG and COVIDx, so that
every corpus builder can be read, trained and evaluated end to end without the real data. `write_phantom_layout(OUT,
n, layout=...)` writes one of them; `load_cxr_dataset(<corpus>, OUT)` reads it (OUT itself, for every layout).

Same generator as NIH's phantoms: `_plan` draws patients, follow-ups, findings (NIH names), views and the NIH
train_val/test split from the seed, `_render` draws each image; same arguments, byte-identical files.

- `chexpert` (v1.0-small): `CheXpert-v1.0-small/{train,valid}.csv` (the 19 columns, `Path` with the prefix) and
  `{train,valid}/patientNNNNN/studyN/view1_frontal.jpg` (and `view2_lateral.jpg`); one plan image is one study. The
  plan's test patients are valid.csv's, numbered after train.csv's (as CheXpert's patient64541+). The NIH findings
  become CheXpert's observations through `CHEXPERT_OBSERVATIONS`. train.csv writes them as the CheXpert labeler
  does, cell by cell from `_LABELER_CELLS`: a finding drawn is 1.0 or, sometimes, -1.0 (uncertain); one not drawn
  is mostly blank, sometimes 0.0 (negated) or -1.0. For the 5 competition tasks the shares of 1.0, 0.0, -1.0 and
  blank land within 1.5 points of CheXpert train's, so the readers' uncertainty and blank policies change the
  labels as they would there. valid.csv is 0/1 in every column (radiologist consensus). No Finding is 1 only when
  no observation but Support Devices is 1 or -1, the labeler's rule; nothing draws support devices or fractures.
- `mimic-cxr` (MIMIC-CXR-JPG 2.0.0): `files/pNN/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg`, the metadata, split, chexpert
  and negbio files (gzipped CSVs) and `IMAGE_FILENAMES`. Subject ids are 8 digits from 1, study ids 8 digits from
  5, dicom ids MIMIC's five dash-separated groups of 8 hex digits; dates are shifted into the 22nd century, in order
  within a patient. Labels are per study, drawn like train.csv's (the two labelers read the same findings, their
  uncertain and blank cells are drawn apart). The plan's test patients are `test`, a fixed 10 % of the others
  `validate` (MIMIC's own is under 1 %, too few patients for a small corpus). The images are histogram-equalised,
  as MIMIC-CXR-JPG's were. No 2.1.0 radiologist test file: the default `test_labels="auto"` reads the labeler's.
- `covidx`: the header-less `patient_id filename class data_source` files of 9A (`train_COVIDx9A.txt`,
  `test_COVIDx9A.txt`), 9B (`train_COVIDx9B.txt`, `test_COVIDx9B.txt`) and CXR-4 (`train.txt`, `val.txt`,
  `test.txt`), each image once in `train/`, `val/` or `test/`. A patient's class is drawn with 9A's training
  proportions (one diagnosis per patient, as in COVIDx) and each of its images is drawn for it (`_COVIDX_FINDINGS`):
  normal with no finding, pneumonia with one focal opacity, COVID-19 with patchy airspace opacities over the
  bilateral peripheral basal pattern of `Fibrosis`, the distribution typical of COVID-19 pneumonia. 9B and CXR-4
  say positive for COVID-19, negative otherwise. The plan's test patients are `test`; a fixed 10 % of the others
  are CXR-4's `val` and so in no 9A/9B list. Sources and names imitate COVIDx's (`_COVIDX_SOURCES`); patient ids
  are unique within a source.

Prevalence: CheXpert and MIMIC phantoms draw findings with `_LABELER_PREVALENCE` (CheXpert train's rate of 1 or -1
for the 5 competition tasks, NIH's for the rest, no emphysema or hernia, which neither labeler knows; about 12 % with
no finding), so that a few hundred phantoms hold positives of each task in every split; COVIDx's draw NIH's, then
the class replaces the findings.

Lateral views: the renderer draws frontal films only. A study gets a second, lateral image with `_LATERAL_CHANCE`
(PA studies usually, portable AP ones rarely), and that image is a stand-in, not a lateral radiograph: the frontal
film averaged with its mirror image, both hemithoraces superimposed as a lateral projection superimposes them. It
carries the study's labels; the readers' default views (frontal) leave it out.

Random streams: besides the plan's and the renderer's, each purpose of `_STREAMS` draws from its own, so that the
CheXpert labeler cells, say, never shift the views or the ids.
"""

from __future__ import annotations

import datetime
import gzip
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from ..models.chest_xray_labels import COVIDX_LABELS
from .chexpert import CHEXPERT_LABELS, CSV_COLUMNS, TRAIN_CSV, VALID_CSV
from .covidx import BINARY_LABELS, IMAGE_FOLDERS, VERSIONS
from .mimic import LABEL_FILES, METADATA_FILE, MIMIC_CXR_LABELS, SPLIT_FILE, SPLIT_NAMES
from .phantoms import (
    _PNG_OPTIONS,
    DIFFICULTY,
    PHANTOM_GENERATOR,
    PHANTOM_RECORD,
    _plan,
    _Prevalence,
    _render,
    _Spec,
    generate_phantoms,
    phantom_record,
    resolve_difficulty,
)

# layout -> the `load_cxr_dataset` corpus that reads it.
LAYOUT_CORPORA = {"nih": "nih-chestxray14", "chexpert": "chexpert", "mimic-cxr": "mimic-cxr", "covidx": "covidx"}
LAYOUTS = tuple(LAYOUT_CORPORA)
CHEXPERT_ROOT = "CheXpert-v1.0-small"
# layout -> split (as its files name it) -> the files that list that split's images.
SPLIT_FILES = {
    "nih": {"train_val": ("train_val_list.txt",), "test": ("test_list.txt",)},
    "chexpert": {"train": (f"{CHEXPERT_ROOT}/{TRAIN_CSV}",), "valid": (f"{CHEXPERT_ROOT}/{VALID_CSV}",)},
    "mimic-cxr": dict.fromkeys(SPLIT_NAMES, (SPLIT_FILE,)),
    "covidx": {
        IMAGE_FOLDERS[split]: tuple(files[split] for files, _ in VERSIONS.values() if split in files)
        for split in IMAGE_FOLDERS
    },
}

# NIH finding -> the CheXpert observations a report of it is labelled with (CheXpert and MIMIC share the labeler's
# 14; Emphysema and Hernia have none and are never drawn for them, see _LABELER_PREVALENCE).
CHEXPERT_OBSERVATIONS = {
    "Atelectasis": ("Atelectasis",),
    "Cardiomegaly": ("Cardiomegaly",),
    "Effusion": ("Pleural Effusion",),
    "Infiltration": ("Lung Opacity",),
    "Mass": ("Lung Lesion",),
    "Nodule": ("Lung Lesion",),
    "Pneumonia": ("Pneumonia", "Lung Opacity"),
    "Pneumothorax": ("Pneumothorax",),
    "Consolidation": ("Consolidation", "Lung Opacity"),
    "Edema": ("Edema", "Lung Opacity"),
    "Fibrosis": ("Lung Opacity",),
    "Pleural_Thickening": ("Pleural Other",),
}
# Finding counts per 100,000 images (NIH names), fitted on 80,000 planned images so that the share drawn after
# co-occurrence is CheXpert train's share of 1 or -1 for the 5 competition tasks (Atelectasis 30.0 %, Cardiomegaly
# 15.7 %, Consolidation 19.0 %, Edema 29.2 %, Pleural Effusion 43.8 %) and NIH's for the other findings.
_LABELER_PREVALENCE = _Prevalence(
    counts={"Atelectasis": 36_800, "Cardiomegaly": 24_800, "Effusion": 44_000, "Infiltration": 27_300, "Mass": 7_800,
            "Nodule": 7_000, "Pneumonia": 1_800, "Pneumothorax": 7_200, "Consolidation": 29_500, "Edema": 44_200,
            "Emphysema": 0, "Fibrosis": 2_200, "Pleural_Thickening": 4_100, "Hernia": 0},
    images=100_000,
    no_finding=12_000,
)  # fmt: skip
# Observation -> (P(-1.0) when present, P(0.0) when absent, P(-1.0) when absent); blank otherwise. For the 5
# competition tasks, set so that with the rates above each value's share is within 1.5 points of CheXpert train's
# (Atelectasis 1.0 / 0.0 / -1.0: 15.1 / 0.6 / 15.7 % on 31,000 rows, CheXpert's 14.9 / 0.6 / 15.1 %); the others,
# without verified counts, share one guess.
_LABELER_CELLS = {
    "Enlarged Cardiomediastinum": (0.15, 0.1, 0.02),
    "Cardiomegaly": (0.22, 0.06, 0.01),
    "Lung Opacity": (0.15, 0.1, 0.02),
    "Lung Lesion": (0.15, 0.1, 0.02),
    "Edema": (0.15, 0.13, 0.02),
    "Consolidation": (0.6, 0.155, 0.03),
    "Pneumonia": (0.15, 0.1, 0.02),
    "Atelectasis": (0.5, 0.01, 0.015),
    "Pneumothorax": (0.15, 0.1, 0.02),
    "Pleural Effusion": (0.1, 0.28, 0.015),
    "Pleural Other": (0.15, 0.1, 0.02),
    "Fracture": (0.15, 0.1, 0.02),
    "Support Devices": (0.15, 0.1, 0.02),
}
# Frontal view -> chance that the study also has a (stand-in) lateral image.
_LATERAL_CHANCE = {"PA": 0.6, "AP": 0.1}
# Share of the non-test patients carved out as MIMIC's validate and CXR-4's val split.
_CARVE_FRACTION = 0.1
_JPEG_OPTIONS = {"format": "JPEG", "quality": 95}

# MIMIC metadata per view: ViewCodeSequence_CodeMeaning, PatientOrientationCodeSequence_CodeMeaning; and per study
# (by its frontal view) the procedure, which is also PerformedProcedureStepDescription.
_MIMIC_VIEWS = {
    "PA": ("postero-anterior", "Erect"),
    "AP": ("antero-posterior", "Recumbent"),
    "LATERAL": ("lateral", "Erect"),
}
_MIMIC_PROCEDURES = {"PA": "CHEST (PA AND LAT)", "AP": "CHEST (PORTABLE AP)"}
_MIMIC_METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)  # fmt: skip
# MIMIC shifts every date into 2100-2200, consistently within a patient.
_MIMIC_EPOCH = datetime.date(2110, 1, 1)

# 9A class -> its images in 9A's train file, and the NIH findings an image of it is drawn with (one option, chosen
# evenly).
_COVIDX_CLASS_COUNTS = {"normal": 8_085, "pneumonia": 5_555, "COVID-19": 16_490}
_COVIDX_FINDINGS = {
    "normal": ((),),
    "pneumonia": (("Pneumonia",), ("Consolidation",)),
    "COVID-19": (("Infiltration", "Fibrosis"),),
}
# data_source -> (one image per patient only, weight per class of the patient): RSNA and SIRM hold one image per
# patient, the others follow patients.
_COVIDX_SOURCES = {
    "rsna": (True, {"normal": 9, "pneumonia": 8}),
    "bimcv": (False, {"normal": 1, "COVID-19": 10}),
    "cohen": (False, {"pneumonia": 2, "COVID-19": 1}),
    "stonybrook": (False, {"COVID-19": 3}),
    "ricord": (False, {"COVID-19": 2}),
    "sirm": (True, {"COVID-19": 1}),
}
_COHEN_STEMS = {"normal": "normal-chest", "pneumonia": "bacterial-pneumonia", "COVID-19": "covid-19-pneumonia"}

# Each purpose's stream is SeedSequence(seed, spawn_key=(k,)): numpy appends a spawn key after padding the entropy to
# its 4-word pool, so these never coincide with the plan's default_rng([seed]) or the renderer's [seed, i, k].
_STREAMS = ("views", "labeler", "negbio", "ids", "carve", "classes", "names")


def _stream(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1 + _STREAMS.index(purpose),)))


@dataclass(frozen=True)
class LayoutImage:
    """One image file a layout wrote. `path` is relative to the output directory; `split` is named as the layout's
    files name it (`SPLIT_FILES`); `patient_id` and `view` are what the corpus's reader reports (AP, PA or LATERAL,
    the stand-in); `findings` are the NIH findings drawn (a lateral shares its study's); `plan_index` is the
    `_plan` entry rendered; `label` is the 9A class of a COVIDx image, else empty."""

    path: str
    split: str
    patient_id: str
    view: str
    findings: tuple[str, ...]
    plan_index: int
    label: str = ""


@dataclass(frozen=True)
class LayoutSplit:
    """One split of a written layout: its image and patient counts and the files that list it."""

    name: str
    images: int
    patients: int
    listed_in: tuple[str, ...]


@dataclass(frozen=True)
class PhantomLayout:
    """What `write_phantom_layout` wrote: the layout, its arguments and every image file."""

    layout: str
    output_dir: Path
    size: int
    seed: int
    difficulty: float
    images: tuple[LayoutImage, ...]

    @property
    def splits(self) -> tuple[LayoutSplit, ...]:
        """Per split, in the layout's order: images, patients and the files listing them."""
        return tuple(
            LayoutSplit(
                name,
                sum(image.split == name for image in self.images),
                len({image.patient_id for image in self.images if image.split == name}),
                files,
            )
            for name, files in SPLIT_FILES[self.layout].items()
        )


@dataclass(frozen=True)
class _Entry:
    image: LayoutImage
    spec: _Spec


def _observations(findings: tuple[str, ...]) -> set[str]:
    return {observation for finding in findings for observation in CHEXPERT_OBSERVATIONS[finding]}


def _labeler_cells(findings: tuple[str, ...], rng: np.random.Generator) -> dict[str, str]:
    """One study's 14 cells as the CheXpert labeler writes them (1.0, 0.0, -1.0 or blank), one draw per cell."""
    present = _observations(findings)
    cells = {}
    for label, draw in zip(_LABELER_CELLS, rng.random(len(_LABELER_CELLS)), strict=True):
        uncertain_present, negative_absent, uncertain_absent = _LABELER_CELLS[label]
        if label in present:
            cells[label] = "-1.0" if draw < uncertain_present else "1.0"
        elif draw < negative_absent:
            cells[label] = "0.0"
        else:
            cells[label] = "-1.0" if draw < negative_absent + uncertain_absent else ""
    mentioned = any(cells[label] in ("1.0", "-1.0") for label in cells if label != "Support Devices")
    cells["No Finding"] = "" if mentioned else "1.0"
    return cells


def _consensus_cells(findings: tuple[str, ...]) -> dict[str, str]:
    """One study's 14 cells as valid.csv's radiologist consensus: 0/1 everywhere."""
    present = _observations(findings)
    cells = {label: "1.0" if label in present else "0.0" for label in _LABELER_CELLS}
    cells["No Finding"] = "0.0" if present - {"Support Devices"} else "1.0"
    return cells


def _with_laterals(specs, views: np.random.Generator, frontal_path, lateral_path, split, patient_id) -> list[_Entry]:
    """Each plan image as its study's frontal image, plus the stand-in lateral with `_LATERAL_CHANCE`."""
    entries = []
    for spec in specs:
        paths = [(frontal_path(spec), spec.view)]
        if views.random() < _LATERAL_CHANCE[spec.view]:
            paths.append((lateral_path(spec), "LATERAL"))
        entries += [
            _Entry(LayoutImage(path, split(spec), patient_id(spec), view, spec.findings, spec.index), spec)
            for path, view in paths
        ]
    return entries


def _carve(patients: list[int], rng: np.random.Generator) -> set[int]:
    """`_CARVE_FRACTION` of `patients` (at least one, never all) by a fixed draw."""
    count = min(max(round(_CARVE_FRACTION * len(patients)), 1), len(patients) - 1)
    return {patients[i] for i in rng.permutation(len(patients))[:count]}


def _csv(rows) -> str:
    return "".join(",".join(str(cell) for cell in row) + "\n" for row in rows)


# --------------------------------------------------------------------------------------------------------------------
# The layouts: plan entries -> image entries and metadata files (relative path -> content); nothing is written here.


def _test_patients(specs: list[_Spec]) -> set[int]:
    return {spec.patient for spec in specs if spec.split == "test"}


def _chexpert(specs: list[_Spec], seed: int) -> tuple[list[_Entry], dict[str, str | bytes]]:
    test = _test_patients(specs)
    # train.csv's patients first, valid.csv's numbered after them, each group in plan order
    ordered = sorted({spec.patient for spec in specs}, key=lambda patient: (patient in test, patient))
    number = {patient: i + 1 for i, patient in enumerate(ordered)}
    split = {patient: "valid" if patient in test else "train" for patient in ordered}

    def study(spec: _Spec) -> str:
        return f"{CHEXPERT_ROOT}/{split[spec.patient]}/patient{number[spec.patient]:05d}/study{spec.follow_up + 1}"

    entries = _with_laterals(
        specs,
        _stream(seed, "views"),
        lambda spec: f"{study(spec)}/view1_frontal.jpg",
        lambda spec: f"{study(spec)}/view2_lateral.jpg",
        lambda spec: split[spec.patient],
        lambda spec: f"patient{number[spec.patient]:05d}",
    )
    labeler = _stream(seed, "labeler")
    cells = {
        spec.index: _consensus_cells(spec.findings) if spec.patient in test else _labeler_cells(spec.findings, labeler)
        for spec in specs
    }
    files: dict[str, str | bytes] = {}
    for name, csv_name in (("train", TRAIN_CSV), ("valid", VALID_CSV)):
        rows = [CSV_COLUMNS]
        # stable: within a patient, studies in order and each study's frontal before its lateral
        for entry in sorted((e for e in entries if e.image.split == name), key=lambda e: number[e.spec.patient]):
            spec = entry.spec
            position = ("Lateral", "") if entry.image.view == "LATERAL" else ("Frontal", spec.view)
            sex = {"M": "Male", "F": "Female"}[spec.gender]
            rows.append((entry.image.path, sex, spec.age, *position, *(cells[spec.index][c] for c in CHEXPERT_LABELS)))
        files[f"{CHEXPERT_ROOT}/{csv_name}"] = _csv(rows)
    return entries, files


def _mimic(specs: list[_Spec], seed: int, size: int) -> tuple[list[_Entry], dict[str, str | bytes]]:
    ids = _stream(seed, "ids")
    patients = sorted({spec.patient for spec in specs})
    subjects = 10_000_000 + ids.choice(10_000_000, len(patients), replace=False)
    subject = {patient: str(value) for patient, value in zip(patients, subjects.tolist(), strict=True)}
    studies = 50_000_000 + ids.choice(10_000_000, len(specs), replace=False)
    study = {spec.index: str(value) for spec, value in zip(specs, studies.tolist(), strict=True)}
    test = _test_patients(specs)
    validate = _carve([patient for patient in patients if patient not in test], _stream(seed, "carve"))
    split = {
        patient: "test" if patient in test else "validate" if patient in validate else "train" for patient in patients
    }

    def path(spec: _Spec) -> str:
        sid = subject[spec.patient]
        # MIMIC's dicom ids: 160 random bits as five dash-separated groups of 8 hex digits (no collision to fear)
        dicom = "-".join(ids.bytes(20).hex()[i : i + 8] for i in range(0, 40, 8))
        return f"files/p{sid[:2]}/p{sid}/s{study[spec.index]}/{dicom}.jpg"

    entries = _with_laterals(
        specs, _stream(seed, "views"), path, path, lambda spec: split[spec.patient], lambda spec: subject[spec.patient]
    )
    when, last = {}, {}
    for spec in specs:  # follow-ups in order: dates increase within a patient
        gap = ids.integers(0, 75 * 365) if spec.follow_up == 0 else ids.integers(1, 400)
        last[spec.patient] = last.get(spec.patient, _MIMIC_EPOCH) + datetime.timedelta(days=int(gap))
        ms = int(ids.integers(0, 86_400_000))  # StudyTime is HHMMSS.fff written as a number: no leading zero
        time = f"{ms // 3_600_000}{ms // 60_000 % 60:02d}{ms // 1000 % 60:02d}.{ms % 1000:03d}"
        when[spec.index] = (last[spec.patient].strftime("%Y%m%d"), time)
    metadata, split_rows = [_MIMIC_METADATA_COLUMNS], [("dicom_id", "study_id", "subject_id", "split")]
    for entry in entries:
        spec, image = entry.spec, entry.image
        dicom, procedure = Path(image.path).stem, _MIMIC_PROCEDURES[spec.view]
        subject_id, study_id = subject[spec.patient], study[spec.index]
        metadata.append((dicom, subject_id, study_id, procedure, image.view, size, size, *when[spec.index], procedure,
                         *_MIMIC_VIEWS[image.view]))  # fmt: skip
        split_rows.append((dicom, study_id, subject_id, image.split))
    files: dict[str, str | bytes] = {
        METADATA_FILE: _gzip(_csv(metadata)),
        SPLIT_FILE: _gzip(_csv(split_rows)),
        "IMAGE_FILENAMES": "".join(f"{path}\n" for path in sorted(entry.image.path for entry in entries)),
    }
    for labeler, name in LABEL_FILES.items():
        stream = _stream(seed, "labeler" if labeler == "chexpert" else labeler)
        rows = [("subject_id", "study_id", *MIMIC_CXR_LABELS)]
        for spec in specs:
            cells = _labeler_cells(spec.findings, stream)
            rows.append((subject[spec.patient], study[spec.index], *(cells[label] for label in MIMIC_CXR_LABELS)))
        files[name] = _gzip(_csv(rows))
    return entries, files


def _covidx_names(source: str, label: str, views: list[str], rng, numbers: dict) -> tuple[str, list[str]]:
    """A patient id unique within `source` and the file names of its images (one per view), in that source's style."""
    if source == "rsna":  # the RSNA patientId, a UUID, is also the file name
        hexa = rng.bytes(16).hex()
        patient = "-".join(hexa[a:b] for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32)))
        return patient, [f"{patient}.png"]
    taken = numbers.setdefault(source, set())
    n = len(taken) + 1
    while source == "stonybrook" and (n in taken or n < 100_000):  # random 6-digit accession-style numbers
        n = int(rng.integers(100_000, 1_000_000))
    taken.add(n)
    studies = rng.choice(100_000, size=len(views), replace=False)
    if source == "sirm":
        return f"COVID_{n}", [f"COVID({n}).png"]
    if source == "cohen":
        days = np.cumsum(rng.integers(1, 8, size=len(views))) - 1
        return str(n), [f"{_COHEN_STEMS[label]}-{n}-day{day}.jpg" for day in days]
    if source == "ricord":
        return f"419639-{n:06d}", [f"MIDRC-RICORD-1C-419639-{n:06d}-{study:05d}-0.png" for study in studies]
    if source == "stonybrook":
        return f"A{n}", [
            f"A{n}-01-{day + 1:02d}-1901-NA-CHEST_{view}-{study:05d}-1.000000-{view}-{study:05d}-1-1.jpg"
            for day, (study, view) in enumerate(zip(studies, views, strict=True))
        ]
    return f"sub-S{n:05d}", [  # bimcv
        f"sub-S{n:05d}_ses-E{study:05d}_run-1_bp-chest_vp-{view.lower()}_dx.png"
        for study, view in zip(studies, views, strict=True)
    ]


def _covidx(specs: list[_Spec], seed: int) -> tuple[list[_Entry], dict[str, str | bytes]]:
    by_patient: dict[int, list[_Spec]] = {}
    for spec in specs:
        by_patient.setdefault(spec.patient, []).append(spec)
    test = _test_patients(specs)
    val = _carve(sorted(set(by_patient) - test), _stream(seed, "carve"))
    draws, names, numbers, entries = _stream(seed, "classes"), _stream(seed, "names"), {}, []
    shares = np.array([_COVIDX_CLASS_COUNTS[label] for label in COVIDX_LABELS], dtype=np.float64)
    for patient, planned in by_patient.items():
        # one diagnosis per patient, as in COVIDx: every film of a patient is of its class
        label = COVIDX_LABELS[int(draws.choice(len(shares), p=shares / shares.sum()))]
        options = _COVIDX_FINDINGS[label]
        drawn = [replace(spec, findings=options[int(draws.integers(len(options)))]) for spec in planned]
        candidates = [
            (source, weights[label])
            for source, (single, weights) in _COVIDX_SOURCES.items()
            if label in weights and (len(drawn) == 1 or not single)
        ]
        weights = np.array([weight for _, weight in candidates], dtype=np.float64)
        source = candidates[int(names.choice(len(candidates), p=weights / weights.sum()))][0]
        patient_id, file_names = _covidx_names(source, label, [spec.view for spec in drawn], names, numbers)
        folder = "test" if patient in test else "val" if patient in val else "train"
        for spec, name in zip(drawn, file_names, strict=True):
            image = LayoutImage(f"{folder}/{name}", folder, patient_id, spec.view, spec.findings, spec.index, label)
            entries.append((_Entry(image, spec), source))
    files: dict[str, str | bytes] = {}
    for split_files, class_names in VERSIONS.values():
        for split, name in split_files.items():
            lines = []
            for entry, source in entries:
                image = entry.image
                if image.split == IMAGE_FOLDERS[split]:
                    label = image.label if class_names == COVIDX_LABELS else BINARY_LABELS[image.label == "COVID-19"]
                    lines.append(f"{image.patient_id} {Path(image.path).name} {label} {source}\n")
            files[name] = "".join(lines)
    return [entry for entry, _ in entries], files


# --------------------------------------------------------------------------------------------------------------------
# Writing.


def _gzip(text: str) -> bytes:
    # mtime 0 and no file name in the header: the same arguments give the same bytes
    return gzip.compress(text.encode(), mtime=0)


def _lateral(pixels: np.ndarray) -> np.ndarray:
    """The lateral stand-in: the frontal film averaged with its mirror image (see the module docstring)."""
    return ((pixels.astype(np.uint16) + pixels[:, ::-1] + 1) // 2).astype(np.uint8)


def _check(layout: str, num_images: int, entries: list[_Entry], output: Path) -> None:
    """Refuse a corpus too small to fill every split (train needs two patients: readers carve validation patients
    from it) and a directory holding image files of another corpus (refused, never deleted)."""
    for name in SPLIT_FILES[layout]:
        patients = {entry.image.patient_id for entry in entries if entry.image.split == name}
        needed = 2 if name == "train" else 1
        if len(patients) < needed:
            raise ValueError(
                f"num_images={num_images} is too few for the {layout} layout: its {name} split would hold "
                f"{len(patients)} patient(s), it needs {needed}; use more images"
            )
    ours = {entry.image.path for entry in entries}
    roots = {Path(path).parts[0] for path in ours}
    strangers = sorted(
        str(path.relative_to(output))
        for root in roots
        for path in (output / root).rglob("*")
        if path.suffix in (".jpg", ".png") and path.relative_to(output).as_posix() not in ours
    )
    if strangers:
        raise ValueError(
            f"{output} holds {len(strangers)} image(s) that are not part of this corpus (e.g. "
            f"{', '.join(strangers[:3])}); write the phantoms to an empty directory"
        )


def _nih(output: Path, num_images: int, size: int, seed: int, difficulty, progress: bool) -> PhantomLayout:
    corpus = generate_phantoms(output, num_images, size=size, seed=seed, difficulty=difficulty, progress=progress)
    images = tuple(
        LayoutImage(f"images/{image.file_name}", image.split, image.patient_id, image.view, image.findings, index)
        for index, image in enumerate(corpus.images)
    )
    return PhantomLayout("nih", corpus.output_dir, corpus.size, corpus.seed, corpus.difficulty, images)


def write_phantom_layout(
    output_dir: str | Path,
    num_images: int,
    *,
    layout: str,
    size: int = 1024,
    seed: int = 0,
    difficulty: str | float = DIFFICULTY,
    progress: bool = False,
) -> PhantomLayout:
    """Write `num_images` phantom studies to `output_dir` in the on-disk layout `layout` (one of `LAYOUTS`; the
    module docstring says what each holds) and return what was written. `"nih"` is `generate_phantoms`, file for
    file. Same arguments, byte-identical files; `load_cxr_dataset(LAYOUT_CORPORA[layout], output_dir)` reads them.

    Raises:
        ValueError: an unknown layout, an argument out of range, too few images to fill the layout's splits, or a
            directory that already holds another corpus.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if int(num_images) < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    if int(size) < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    level = resolve_difficulty(difficulty)
    output, num_images, size, seed = Path(output_dir), int(num_images), int(size), int(seed)
    existing = phantom_record(output)
    if existing is not None and existing.get("layout", "nih") != layout:
        raise ValueError(
            f"{output} holds {existing.get('layout', 'nih')} phantoms ({PHANTOM_RECORD}); write the {layout} layout "
            "to an empty directory"
        )
    if layout == "nih":
        return _nih(output, num_images, size, seed, level, progress)

    if layout == "chexpert":
        entries, files = _chexpert(_plan(num_images, seed, _LABELER_PREVALENCE), seed)
    elif layout == "mimic-cxr":
        entries, files = _mimic(_plan(num_images, seed, _LABELER_PREVALENCE), seed, size)
    else:
        entries, files = _covidx(_plan(num_images, seed), seed)
    _check(layout, num_images, entries, output)

    rendered: tuple[int, np.ndarray] | None = None
    for entry in tqdm(entries, desc=f"{layout} phantoms", unit="img") if progress else entries:
        # a study's lateral follows its frontal image: each plan entry is rendered once
        if rendered is None or rendered[0] != entry.image.plan_index:
            rendered = (entry.image.plan_index, _render(entry.spec, size, level, seed)[0])
        pixels = _lateral(rendered[1]) if entry.image.view == "LATERAL" else rendered[1]
        image = Image.fromarray(pixels)
        if layout == "mimic-cxr":  # as MIMIC-CXR-JPG's images were made
            image = ImageOps.equalize(image)
        path = output / entry.image.path
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **(_JPEG_OPTIONS if path.suffix == ".jpg" else _PNG_OPTIONS))
    for name, content in files.items():
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    record = {"generator": PHANTOM_GENERATOR, "layout": layout, "num_images": num_images, "size": size, "seed": seed,
              "difficulty": level}  # fmt: skip
    (output / PHANTOM_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return PhantomLayout(layout, output, size, seed, level, tuple(entry.image for entry in entries))


__all__ = [
    "CHEXPERT_OBSERVATIONS",
    "LAYOUTS",
    "LAYOUT_CORPORA",
    "SPLIT_FILES",
    "LayoutImage",
    "LayoutSplit",
    "PhantomLayout",
    "write_phantom_layout",
]
