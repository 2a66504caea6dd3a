"""What the CheXpert, MIMIC-CXR-JPG and COVIDx layouts hold for a phantom plan: each image's path, split, patient id
and view, and each metadata file's content, in the corpus's own format (`layouts` describes each and writes them).

Prevalence: CheXpert and MIMIC phantoms draw findings with `LABELER_PREVALENCE` (CheXpert train's rate of 1 or -1
for the 5 competition tasks, NIH's for the rest, no emphysema or hernia, which neither labeler knows; about 12 % with
no finding), so that a few hundred phantoms hold positives of each task in every split; COVIDx's draw NIH's, then
the class replaces the findings.

Random streams: besides the plan's and the renderer's, each purpose of `_STREAMS` draws from its own, so that the
CheXpert labeler cells, say, never shift the views or the ids.
"""

from __future__ import annotations

import datetime
import gzip
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ...models.chest_xray_labels import COVIDX_LABELS
from ..chexpert import CHEXPERT_LABELS, CHEXPERT_PREFIXES, CSV_COLUMNS, TRAIN_CSV, VALID_CSV
from ..covidx import BINARY_LABELS, IMAGE_FOLDERS, VERSIONS
from ..mimic import LABEL_FILES, METADATA_FILE, MIMIC_CXR_LABELS, SPLIT_FILE
from .plan import TEST_FRACTION, ImagePlan, Prevalence, plan_corpus

# The downsampled release, CheXpert-v1.0-small.
CHEXPERT_ROOT = CHEXPERT_PREFIXES[0]
# NIH finding -> the CheXpert observations a report of it is labelled with (CheXpert and MIMIC share the labeler's
# 14; Emphysema and Hernia have none and are never drawn for them, see LABELER_PREVALENCE).
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
LABELER_PREVALENCE = Prevalence(
    counts={"Atelectasis": 36_800, "Cardiomegaly": 24_800, "Effusion": 44_000, "Infiltration": 27_300, "Mass": 7_800,
            "Nodule": 7_000, "Pneumonia": 1_800, "Pneumothorax": 7_200, "Consolidation": 29_500, "Edema": 44_200,
            "Emphysema": 0, "Fibrosis": 2_200, "Pleural_Thickening": 4_100, "Hernia": 0},
    images=100_000,
    no_finding=12_000,
)  # fmt: skip
# Observation -> (P(-1.0) when present, P(0.0) when absent, P(-1.0) when absent); blank otherwise. For the 5
# competition tasks, set so that with the rates above each value's share is within 1.5 points of CheXpert train's
# (Atelectasis 1.0 / 0.0 / -1.0: 15.1 / 0.6 / 15.7 % on 31,000 rows, CheXpert's 14.9 / 0.6 / 15.1 %); the others,
# without verified counts, share one guess. Keep the order: a study draws one number per cell, in this order.
_GUESSED_CELLS = (0.15, 0.1, 0.02)
_LABELER_CELLS = {
    "Enlarged Cardiomediastinum": _GUESSED_CELLS,
    "Cardiomegaly": (0.22, 0.06, 0.01),
    "Lung Opacity": _GUESSED_CELLS,
    "Lung Lesion": _GUESSED_CELLS,
    "Edema": (0.15, 0.13, 0.02),
    "Consolidation": (0.6, 0.155, 0.03),
    "Pneumonia": _GUESSED_CELLS,
    "Atelectasis": (0.5, 0.01, 0.015),
    "Pneumothorax": _GUESSED_CELLS,
    "Pleural Effusion": (0.1, 0.28, 0.015),
    "Pleural Other": _GUESSED_CELLS,
    "Fracture": _GUESSED_CELLS,
    "Support Devices": _GUESSED_CELLS,
}
# Frontal view -> chance that the study also has a (stand-in) lateral image.
_LATERAL_CHANCE = {"PA": 0.6, "AP": 0.1}
# Share of the non-test patients carved out as MIMIC's validate and CXR-4's val split.
_CARVE_FRACTION = 0.1

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
    `plan_corpus` entry rendered; `label` is the 9A class of a COVIDx image, else empty."""

    path: str
    split: str
    patient_id: str
    view: str
    findings: tuple[str, ...]
    plan_index: int
    label: str = ""


@dataclass(frozen=True)
class LayoutEntry:
    """One image file to write: what the layout says about it, and the plan entry it renders."""

    image: LayoutImage
    spec: ImagePlan


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


def _with_laterals(
    specs, views: np.random.Generator, frontal_path, lateral_path, split, patient_id
) -> list[LayoutEntry]:
    """Each plan image as its study's frontal image, plus the stand-in lateral with `_LATERAL_CHANCE`."""
    entries = []
    for spec in specs:
        paths = [(frontal_path(spec), spec.view)]
        if views.random() < _LATERAL_CHANCE[spec.view]:
            paths.append((lateral_path(spec), "LATERAL"))
        entries += [
            LayoutEntry(LayoutImage(path, split(spec), patient_id(spec), view, spec.findings, spec.index), spec)
            for path, view in paths
        ]
    return entries


def _carve(patients: list[int], rng: np.random.Generator) -> set[int]:
    """`_CARVE_FRACTION` of `patients` (at least one, never all) by a fixed draw."""
    count = min(max(round(_CARVE_FRACTION * len(patients)), 1), len(patients) - 1)
    return {patients[i] for i in rng.permutation(len(patients))[:count]}


def _csv(rows) -> str:
    return "".join(",".join(str(cell) for cell in row) + "\n" for row in rows)


def _test_patients(specs: list[ImagePlan]) -> set[int]:
    return {spec.patient for spec in specs if spec.split == "test"}


def _chexpert(specs: list[ImagePlan], seed: int) -> tuple[list[LayoutEntry], dict[str, str | bytes]]:
    test = _test_patients(specs)
    # train.csv's patients first, valid.csv's numbered after them, each group in plan order
    ordered = sorted({spec.patient for spec in specs}, key=lambda patient: (patient in test, patient))
    number = {patient: i + 1 for i, patient in enumerate(ordered)}
    split = {patient: "valid" if patient in test else "train" for patient in ordered}

    def study(spec: ImagePlan) -> str:
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


def _mimic(specs: list[ImagePlan], seed: int, size: int) -> tuple[list[LayoutEntry], dict[str, str | bytes]]:
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

    def path(spec: ImagePlan) -> str:
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


def _covidx(specs: list[ImagePlan], seed: int) -> tuple[list[LayoutEntry], dict[str, str | bytes]]:
    by_patient: dict[int, list[ImagePlan]] = {}
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
            entries.append((LayoutEntry(image, spec), source))
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


def _gzip(text: str) -> bytes:
    # mtime 0 and no file name in the header: the same arguments give the same bytes
    return gzip.compress(text.encode(), mtime=0)


def plan_layout(
    layout: str, num_images: int, seed: int, size: int, test_fraction: float = TEST_FRACTION
) -> tuple[list[LayoutEntry], dict[str, str | bytes]]:
    """The image files of the `layout` corpus (not NIH's) in writing order, each study's lateral after its frontal
    image, and its metadata files (relative path -> content); nothing is rendered or written here. The plan's test
    patients (`test_fraction` of the images) make the layout's held-out split (CheXpert's valid, MIMIC's and
    COVIDx's test)."""
    if layout == "chexpert":
        return _chexpert(plan_corpus(num_images, seed, LABELER_PREVALENCE, test_fraction), seed)
    if layout == "mimic-cxr":
        return _mimic(plan_corpus(num_images, seed, LABELER_PREVALENCE, test_fraction), seed, size)
    return _covidx(plan_corpus(num_images, seed, test_fraction=test_fraction), seed)
