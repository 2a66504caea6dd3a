"""Synthetic chest radiographs ("phantoms") written in NIH ChestX-ray14's exact on-disk format.

No real radiograph can be shipped with the package, so the demo and the tests read this corpus through the same
`nih-chestxray14` builder that reads NIH's own files: `images/PPPPPPPP_FFF.png` (8-bit grayscale), the
`Data_Entry_2017.csv` header with its two comma-containing column names, the official split lists and
`BBox_List_2017.csv` (8 ChestX-ray8 classes, test images only, `Infiltrate` spelling).

Each image is an attenuation model of a frontal chest film, drawn directly at the requested size: neck, sloping
shoulders, chest wall and abdomen; lungs whose apices, lateral walls, costophrenic angles and diaphragm domes come
from a few per-patient parameters; the mediastinal silhouette (superior vena cava, aortic knob, pulmonary trunk) and
the heart; trachea, spine, posterior and anterior ribs, clavicles; hila and the vessels branching from them; breast
and nipple shadows and a gastric bubble. Acquisition varies per image: AP films (portable, sicker patients) have a
magnified heart, poorer inspiration, higher clavicles, scapulae over the upper zones, more noise and less contrast
than PA films; exposure, heel effect, position and a small rotation vary on every film. The 14 NIH findings change
that model where a radiologist would look for them. Labels, co-occurrence (heart failure, infection, collapse next
to fluid, COPD, fibrotic lung) and prevalence follow NIH's label file, about 54 % No Finding; Hernia is raised from
0.2 % to 0.4 % so that a corpus of a few thousand images still holds some.

`difficulty` (a name in `DIFFICULTY_LEVELS` or a float d in [0, 1]; default "medium" = 0.5) sets:
- conspicuity: each drawn finding gets a strength k ~ U(max(0.05, 1 - 1.5 d), 1 - 0.3 d) that scales its density,
  size change or extent: at "easy" (0.2) every finding is plain (k ≥ 0.7), from "medium" on some are drawn at or
  below the noise;
- quantum noise: σ = 0.008 + 0.03 d of full scale, ×1.4 on AP films;
- variation: per-patient anatomy and per-image acquisition spread over (0.5 + d) × their nominal ranges (heart size,
  lung volume and lucency, dome heights, hilar size, position, exposure), rotation up to ±(2 + 6 d)°, and contrast
  drops by up to 25 % × d;
- confounders: nipple shadows (nodule mimics) in (10 + 30 d) % of patients.
Measured here: a 4-block CNN trained from scratch on 2,300 phantoms at 64 px for 8 epochs reaches a test mean AUROC
of about 0.87 at "easy", 0.77 at "medium" (large findings such as emphysema and edema near 1.0, nodules and fibrosis
about 0.55) and 0.65 at "hard".

Next to NIH's files the generator writes `cxr_vitmae_phantoms.json` (its arguments), which `phantom_record` reads:
results on phantoms are then labelled as such in `training_args.json`, `metrics.json` and model cards. The same
plan and images in CheXpert's, MIMIC-CXR-JPG's and COVIDx's layouts: `phantom_layouts`.

Speed (one core, PNG writing included): about 100 images/s at 256 px and 8 images/s at 1024 px.
Labels, patients and splits depend only on `seed` and `num_images`, never on `size` or `difficulty`.

Random streams: the corpus plan (patients, labels, views, splits) comes from `default_rng([seed])`; image i draws its
acquisition from `default_rng([seed, i, 0])` and its finding j (NIH order) from `default_rng([seed, i, 1 + j])`, so
images render independently and in any order, and an image re-rendered without one finding keeps every other draw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..models.chest_xray_labels import NIH_CHESTXRAY14_LABELS

# The file that marks a directory as written by `generate_phantoms` (NIH's own files stay exactly NIH's).
PHANTOM_RECORD = "cxr_vitmae_phantoms.json"
PHANTOM_GENERATOR = "cxr-vitmae phantoms"
DIFFICULTY_LEVELS = {"easy": 0.2, "medium": 0.5, "hard": 0.8}
DIFFICULTY_CHOICES = tuple(DIFFICULTY_LEVELS)
DIFFICULTY = "medium"

DATA_ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
# The ChestX-ray8 classes, the only ones NIH boxed; the box file spells Infiltration the 2017 way.
BOX_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax")
BOX_FILE_SPELLING = {"Infiltration": "Infiltrate"}
NO_FINDING = "No Finding"
TEST_FRACTION = 25_596 / 112_120


@dataclass(frozen=True)
class _Prevalence:
    """What the plan draws labels from: finding counts (every NIH name) over `images` images, `no_finding` of which
    have none. Other corpora's layouts pass their own (`phantom_layouts`)."""

    counts: dict[str, float]
    images: int
    no_finding: int


# NIH label counts over all 112,120 images (Hernia raised, see the module docstring), and the number with none.
_NIH_PREVALENCE = _Prevalence(
    counts={
        "Atelectasis": 11_559,
        "Cardiomegaly": 2_776,
        "Effusion": 13_317,
        "Infiltration": 19_894,
        "Mass": 5_782,
        "Nodule": 6_331,
        "Pneumonia": 1_431,
        "Pneumothorax": 5_302,
        "Consolidation": 4_667,
        "Edema": 2_303,
        "Emphysema": 2_516,
        "Fibrosis": 1_686,
        "Pleural_Thickening": 3_385,
        "Hernia": 450,
    },
    images=112_120,
    no_finding=60_361,
)
# (present, then added with probability): the clinical clusters of NIH's labels (heart failure, infection, collapse
# next to fluid or consolidation, COPD, fibrotic lung). Applied once, in this order, after the independent draws.
_CO_OCCURRENCE = (
    ("Cardiomegaly", "Effusion", 0.35),
    ("Cardiomegaly", "Edema", 0.15),
    ("Edema", "Effusion", 0.45),
    ("Pneumonia", "Infiltration", 0.45),
    ("Pneumonia", "Consolidation", 0.2),
    ("Consolidation", "Effusion", 0.2),
    ("Effusion", "Atelectasis", 0.2),
    ("Mass", "Nodule", 0.2),
    ("Emphysema", "Pneumothorax", 0.12),
    ("Fibrosis", "Pleural_Thickening", 0.2),
)
# An abnormal image gets one primary finding drawn by NIH frequency, then each other finding independently with this
# share of NIH's per-abnormal-image rate, then the co-occurrence rules: the marginals land within about 15 % of NIH's
# and the mean is 1.56 findings per abnormal image (NIH: 1.57).
_SECONDARY_SCALE = 0.3
_PNG_OPTIONS = {"format": "PNG", "compress_level": 1}


@dataclass(frozen=True)
class PhantomBox:
    """One box of `BBox_List_2017.csv`, in pixels of the written image. `label` is the NIH label-file spelling
    (`Infiltration`); the box file itself writes `Infiltrate`, as NIH's does."""

    label: str
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class PhantomImage:
    """What the generator wrote for one image. `patient_id` is the 8-digit prefix of the file name (the CSV's
    `Patient ID` column holds the same number without zero padding); `labels` is the 14-long multi-hot vector in
    `NIH_CHESTXRAY14_LABELS` order; `boxes` is empty for train_val images, as in NIH."""

    file_name: str
    patient_id: str
    follow_up: int
    age: int
    gender: str
    view: str
    split: str
    labels: tuple[float, ...]
    boxes: tuple[PhantomBox, ...] = ()

    @property
    def findings(self) -> tuple[str, ...]:
        return tuple(name for name, value in zip(NIH_CHESTXRAY14_LABELS, self.labels, strict=True) if value)

    @property
    def finding_labels(self) -> str:
        """The `Finding Labels` cell: pipe-separated NIH names, or `No Finding` alone."""
        return "|".join(self.findings) or NO_FINDING


@dataclass(frozen=True)
class PhantomCorpus:
    """The corpus `generate_phantoms` wrote, image by image in file-name order."""

    output_dir: Path
    size: int
    seed: int
    difficulty: float
    images: tuple[PhantomImage, ...]
    label_names: tuple[str, ...] = NIH_CHESTXRAY14_LABELS

    @property
    def train_val_files(self) -> list[str]:
        return [image.file_name for image in self.images if image.split == "train_val"]

    @property
    def test_files(self) -> list[str]:
        return [image.file_name for image in self.images if image.split == "test"]

    def by_file_name(self) -> dict[str, PhantomImage]:
        return {image.file_name: image for image in self.images}

    def labels_array(self) -> np.ndarray:
        return np.array([image.labels for image in self.images], dtype=np.float32).reshape(-1, len(self.label_names))


def resolve_difficulty(difficulty: str | float) -> float:
    """A level name of `DIFFICULTY_LEVELS` or a number in [0, 1] as the float the renderer uses."""
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTY_LEVELS:
            raise ValueError(f"difficulty {difficulty!r}: expected one of {', '.join(DIFFICULTY_CHOICES)} or 0..1")
        return DIFFICULTY_LEVELS[difficulty]
    value = float(difficulty)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"difficulty {difficulty!r}: expected a number in [0, 1] or one of {DIFFICULTY_CHOICES}")
    return value


# --------------------------------------------------------------------------------------------------------------------
# The corpus plan: patients, follow-ups, labels, views, splits. Independent of size and difficulty.


@dataclass(frozen=True)
class _Spec:
    index: int
    file_name: str
    patient: int
    follow_up: int
    age: int
    gender: str
    view: str
    split: str
    findings: tuple[str, ...]
    anatomy: dict = field(hash=False, compare=False)
    original_size: tuple[int, int] = (2500, 2048)
    spacing: float = 0.143


_ANATOMY_KEYS = (
    "body_scale",
    "body_width",
    "lung_height",
    "lung_width",
    "heart_size",
    "heart_shift",
    "dome",
    "dome_gap",
    "rib_spacing",
    "rib_phase",
    "spine_shift",
    "breast_size",
    "lung_air",
    "hila",
)


def _draw_findings(rng: np.random.Generator, prevalence: _Prevalence = _NIH_PREVALENCE) -> tuple[str, ...]:
    names = NIH_CHESTXRAY14_LABELS
    counts = np.array([prevalence.counts[name] for name in names], dtype=np.float64)
    abnormal_share = 1.0 - prevalence.no_finding / prevalence.images
    if rng.random() >= abnormal_share:
        return ()
    present = {names[rng.choice(len(names), p=counts / counts.sum())]}
    secondary = _SECONDARY_SCALE * counts / prevalence.images / abnormal_share
    for name, draw, p in zip(names, rng.random(len(names)), secondary, strict=True):
        if draw < p:
            present.add(name)
    for cause, effect, p in _CO_OCCURRENCE:
        if cause in present and rng.random() < p:
            present.add(effect)
    return tuple(name for name in names if name in present)


def _plan(num_images: int, seed: int, prevalence: _Prevalence = _NIH_PREVALENCE) -> list[_Spec]:
    rng = np.random.default_rng([seed])
    # Follow-ups per patient: geometric, mean ≈ 3.3 (NIH: 3.6), at most 12; at least two patients so that both
    # lists can be filled.
    per_patient: list[int] = []
    remaining = num_images
    while remaining:
        count = min(int(rng.geometric(0.3)), remaining, 12)
        if count == num_images > 1:
            count -= 1
        per_patient.append(count)
        remaining -= count

    order = rng.permutation(len(per_patient))
    target = max(round(TEST_FRACTION * num_images), 1)
    test_patients: set[int] = set()
    test_images = 0
    for patient in order:
        if test_images >= target or len(test_patients) == len(per_patient) - 1:
            break
        test_patients.add(int(patient))
        test_images += per_patient[patient]

    specs: list[_Spec] = []
    spacings = (0.143, 0.143, 0.143, 0.139, 0.168, 0.171)
    widths = (2048, 2500, 2544, 2682, 2894, 2992, 3056)
    for patient, count in enumerate(per_patient):
        gender = "M" if rng.random() < 0.56 else "F"
        age = int(np.clip(rng.normal(48, 17), 1, 92))
        anatomy = {
            key: float(value) for key, value in zip(_ANATOMY_KEYS, rng.standard_normal(len(_ANATOMY_KEYS)), strict=True)
        }
        anatomy["nipple_draw"] = float(rng.random())
        anatomy["breast"] = float(gender == "F" and age > 16 and rng.random() < 0.85)
        anatomy["gastric_bubble"] = float(rng.random() < 0.65)
        for follow_up in range(count):
            findings = _draw_findings(rng, prevalence)
            view = "AP" if rng.random() < (0.52 if findings else 0.3) else "PA"
            original = (int(rng.choice(widths)), int(rng.choice(widths)))
            specs.append(
                _Spec(
                    index=len(specs),
                    file_name=f"{patient + 1:08d}_{follow_up:03d}.png",
                    patient=patient + 1,
                    follow_up=follow_up,
                    age=min(age + follow_up // 3, 95),
                    gender=gender,
                    view=view,
                    split="test" if patient in test_patients else "train_val",
                    findings=findings,
                    anatomy=anatomy,
                    original_size=original,
                    spacing=float(rng.choice(spacings)),
                )
            )
    return specs


# --------------------------------------------------------------------------------------------------------------------
# Rendering. Patient coordinates (u, v): u across (patient's right on the viewer's left, as on a film), v down, both
# about [-1, 1] over the field of view; each image maps them to pixels by a scale, a shift and a small rotation.
# Everything is an attenuation map (soft tissue + bone - air); a film-like sigmoid turns it into brightness.


@lru_cache(maxsize=4)
def _axis(size: int) -> np.ndarray:
    return (np.arange(size, dtype=np.float32) + 0.5) * np.float32(2.0 / size) - np.float32(1.0)


class _Frame:
    """The pixel grid of one image in patient coordinates, with pixel windows for drawing local structures."""

    def __init__(self, size: int, scale: float, shift: tuple[float, float], angle: float):
        self.size, self.scale = size, scale
        self.tx, self.ty = shift
        self.cos, self.sin = float(np.cos(angle)), float(np.sin(angle))
        axis = _axis(size)
        x, y = (axis - np.float32(self.tx))[None, :], (axis - np.float32(self.ty))[:, None]
        c, s = np.float32(self.cos / scale), np.float32(self.sin / scale)
        self.u = c * x + s * y
        self.v = c * y - s * x
        # One pixel in patient units: soft edges are a pixel or two wide at every size.
        self.pixel = 2.0 / (size * scale)

    def window(self, u0: float, u1: float, v0: float, v1: float) -> tuple[slice, slice] | None:
        us, vs = np.array([u0, u1, u0, u1]), np.array([v0, v0, v1, v1])
        xs = self.tx + self.scale * (self.cos * us - self.sin * vs)
        ys = self.ty + self.scale * (self.sin * us + self.cos * vs)
        half = self.size / 2.0
        c0, c1 = max(int(np.floor((xs.min() + 1) * half)), 0), min(int(np.ceil((xs.max() + 1) * half)) + 1, self.size)
        r0, r1 = max(int(np.floor((ys.min() + 1) * half)), 0), min(int(np.ceil((ys.max() + 1) * half)) + 1, self.size)
        if c1 <= c0 or r1 <= r0:
            return None
        return slice(r0, r1), slice(c0, c1)


def _ramp(distance, width: float):
    """0 outside, 1 inside a region given by a signed distance (positive inside), linear across `width`."""
    return np.clip(distance * np.float32(1.0 / width) + np.float32(0.5), 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Band-limited noise of about unit variance: white noise on a coarse grid, bicubic-upsampled by PIL."""
    coarse = rng.standard_normal((max(cells[0], 2), max(cells[1], 2)), dtype=np.float32)
    image = Image.fromarray(coarse).resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32)


def _ridges(noise: np.ndarray, sharpness) -> np.ndarray:
    """Thin lines along the zero crossings of smooth noise: a branching network like vessels or interstitium."""
    line = np.clip(1.0 - np.abs(noise) * sharpness, 0.0, 1.0)
    return line * line


def _sphere(du: np.ndarray, dv: np.ndarray, radius: float) -> np.ndarray:
    """Projected thickness of a ball, normalised to 1 at its centre."""
    return np.sqrt(np.clip(1.0 - (du * du + dv * dv) * np.float32(1.0 / radius**2), 0.0, 1.0))


@dataclass
class _Anatomy:
    """One image's geometry in patient coordinates. Per-lung tuples: index 0 is the patient's right lung (viewer's
    left, u < 0), 1 the left. `x` is the distance from the midline towards that lung's chest wall."""

    apex: tuple[float, float]
    apex_x: tuple[float, float]
    lateral: tuple[float, float]
    medial: tuple[float, float]
    cp: tuple[float, float]
    dome: tuple[float, float]
    dome_x: tuple[float, float]
    heart_top: float
    heart_bottom: float
    heart_left: float
    heart_right: float
    hilum_v: float
    hila: float
    body_width: float
    rib_spacing: float
    rib_phase: float
    spine: float
    air: float
    markings: float


def _lung_distance(u, v, anatomy: _Anatomy, side: int):
    """Approximate signed distance to one lung's outline (positive inside): a rounded apex, the lateral wall and the
    mediastinal border widening downwards, and the diaphragm dome meeting the wall at the costophrenic angle."""
    x = -u if side == 0 else u
    apex, cp, apex_x = anatomy.apex[side], anatomy.cp[side], anatomy.apex_x[side]
    t = np.clip((v - apex) * np.float32(1.0 / (cp - apex)), 0.0, 1.0)
    rounding = np.sqrt(1.0 - (1.0 - t) ** 2)
    lateral = apex_x + (anatomy.lateral[side] - apex_x) * rounding - x
    medial = x - apex_x + (apex_x - anatomy.medial[side]) * np.sqrt(rounding)
    distance = np.minimum(np.minimum(lateral, medial), v - np.float32(apex))
    dome_x, dome = anatomy.dome_x[side], anatomy.dome[side]
    outer = np.maximum(x - dome_x, 0.0) * np.float32(1.0 / (anatomy.lateral[side] - dome_x))
    inner = np.maximum(dome_x - x, 0.0) * np.float32(1.0 / dome_x)
    diaphragm = (cp - dome) * outer * outer + 0.12 * inner * inner + (dome - v)
    return np.minimum(distance, diaphragm)


def _lung_point(anatomy: _Anatomy, side: int, t: float, across: float) -> tuple[float, float]:
    """Patient coordinates of a point well inside a lung: `t` from apex (0) to the costophrenic level (1), `across`
    from the mediastinal (0) to the lateral (1) border."""
    apex, cp, apex_x = anatomy.apex[side], anatomy.cp[side], anatomy.apex_x[side]
    rounding = float(np.sqrt(1.0 - (1.0 - t) ** 2))
    lateral = apex_x + (anatomy.lateral[side] - apex_x) * rounding
    medial = apex_x - (apex_x - anatomy.medial[side]) * np.sqrt(rounding)
    x = medial + across * (lateral - medial)
    dome_x, dome = anatomy.dome_x[side], anatomy.dome[side]
    outer = max(x - dome_x, 0.0) / (anatomy.lateral[side] - dome_x)
    inner = max(dome_x - x, 0.0) / dome_x
    v = min(apex + t * (cp - apex), dome + (cp - dome) * outer * outer + 0.12 * inner * inner - 0.06)
    return (-x if side == 0 else x), float(v)


class _Canvas:
    """The attenuation layers of one image and the boxes of what was drawn on it."""

    def __init__(self, frame: _Frame):
        shape = (frame.size, frame.size)
        self.frame = frame
        self.tissue = np.zeros(shape, np.float32)
        self.air = np.zeros(shape, np.float32)
        self.markings = np.zeros(shape, np.float32)
        self.boxes: list[tuple[str, float, float, float, float]] = []

    def box(self, label: str, change: np.ndarray, window: tuple[slice, slice], fraction: float = 0.2) -> None:
        """Record the tight box of the pixels where `change` (the finding's effect inside `window`) reaches
        `fraction` of its peak."""
        peak = float(change.max()) if change.size else 0.0
        if peak <= 0.0:
            return
        drawn = change >= fraction * peak
        rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
        r0, c0 = window[0].start + int(rows[0]), window[1].start + int(cols[0])
        r1, c1 = window[0].start + int(rows[-1]) + 1, window[1].start + int(cols[-1]) + 1
        self.boxes.append((label, float(c0), float(r0), float(c1 - c0), float(r1 - r0)))


def _anatomy(spec: _Spec, rng: np.random.Generator, spread: float, strengths: dict, collapse: tuple) -> _Anatomy:
    z = spec.anatomy
    ap = spec.view == "AP"
    # AP films are mostly supine or sitting: poorer inspiration, higher domes, heart magnified (further from the
    # detector).
    inspiration = 0.035 * spread * float(rng.standard_normal()) + (0.05 if ap else 0.0)
    height = 1.0 + 0.05 * spread * z["lung_height"]
    width = 1.0 + 0.04 * spread * z["lung_width"]
    heart = (1.0 + 0.05 * spread * z["heart_size"]) * (1.12 if ap else 1.0)
    right_dome = 0.34 + 0.03 * spread * z["dome"] + inspiration
    domes = [right_dome, right_dome + 0.05 + 0.015 * spread * z["dome_gap"]]
    cps = [d + 0.24 * height for d in domes]
    # habitus and lung volume vary: normal films overlap the milder emphysema and edema
    air = 1.0 + 0.06 * spread * z["lung_air"] + 0.03 * spread * float(rng.standard_normal())
    markings, rib_spacing = 1.0, 0.118
    if "Emphysema" in strengths:
        k = strengths["Emphysema"]
        cps = [c + 0.06 * k for c in cps]
        domes = [c - (c - d - 0.1 * k) * (1.0 - 0.7 * k) for c, d in zip(cps, domes, strict=True)]
        air, markings, heart = air * (1.0 + 0.3 * k), 1.0 - 0.5 * k, heart * (1.0 - 0.1 * k)
        rib_spacing *= 1.0 + 0.08 * k
    if "Fibrosis" in strengths:
        domes = [d - 0.04 * strengths["Fibrosis"] for d in domes]
        cps = [c - 0.04 * strengths["Fibrosis"] for c in cps]
    if collapse:
        side, lobar, k = collapse
        lift = 0.06 * k if lobar else 0.0
        domes[side] -= lift
        cps[side] -= lift
    if "Cardiomegaly" in strengths:
        heart *= 1.0 + 0.4 * strengths["Cardiomegaly"]
    apex = -0.66 * height - 0.04
    hilum_v = -0.1 + 0.5 * (domes[0] - 0.34)
    return _Anatomy(
        apex=(apex, apex + 0.015),
        apex_x=(0.33 * width, 0.34 * width),
        lateral=(0.8 * width, 0.8 * width),
        medial=(0.07, 0.08),
        cp=(cps[0], cps[1]),
        dome=(domes[0], domes[1]),
        dome_x=(0.42 * width, 0.44 * width),
        heart_top=hilum_v + 0.06,
        heart_bottom=domes[1] + 0.04,
        heart_left=(0.42 + 0.02 * spread * z["heart_shift"]) * heart * width,
        heart_right=0.17 * (1.0 + 0.6 * (heart - 1.0)) * width,
        hilum_v=hilum_v,
        hila=0.35 * (1.0 + 0.2 * spread * z["hila"]),
        body_width=0.9 * (1.0 + 0.05 * spread * z["body_width"]),
        rib_spacing=rib_spacing * (1.0 + 0.04 * spread * z["rib_spacing"]),
        rib_phase=0.1 * float(z["rib_phase"]),
        spine=0.008 * spread * z["spine_shift"],
        air=air,
        markings=markings,
    )


def _bump(offset, width: float):
    """A smooth bump of height 1 and half-width `width` (cheaper than a Gaussian)."""
    inside = np.clip(1.0 - offset * offset * np.float32(1.0 / width**2), 0.0, 1.0)
    return inside * inside


def _mediastinum(frame: _Frame, anatomy: _Anatomy):
    """The mediastinal silhouette and, as part of it, the heart, inside their pixel window. Upper mediastinum: the
    superior vena cava on the viewer's left, the aortic knob and the pulmonary trunk on the right. Below them the
    heart widens down to the diaphragm: the right atrium bulges gently, the left ventricle sweeps out to the apex,
    most of it left of the midline."""
    window = frame.window(-anatomy.heart_right - 0.05, anatomy.heart_left + 0.05, -1.6, 1.6)
    u, v = frame.u[window], frame.v[window]
    top, bottom = anatomy.heart_top, anatomy.heart_bottom
    t = np.clip((v - np.float32(top)) * np.float32(1.0 / (bottom - top)), 0.0, 1.0)
    widening = t * (2.0 - t)
    root = np.sqrt(widening)
    left = 0.1 + 0.075 * _bump(v - np.float32(top - 0.3), 0.09) + 0.03 * _bump(v - np.float32(top - 0.1), 0.08)
    left += np.float32(anatomy.heart_left - 0.1) * (widening * np.sqrt(root))
    right = np.float32(0.085) + np.float32(anatomy.heart_right - 0.085) * root
    mediastinum = _ramp(np.minimum(u + right, left - u), 1.5 * frame.pixel)
    return window, mediastinum, mediastinum * (t > 0)


def _draw_body(canvas: _Canvas, anatomy: _Anatomy, spec: _Spec) -> None:
    """Soft tissue (neck, sloping shoulders, chest wall, abdomen, breasts) and the clavicles."""
    frame = canvas.frame
    u, v = frame.u, frame.v
    width = anatomy.body_width
    # Torso half-width: the chest wall narrows gently to the waist; neck and sloping shoulders above v = -0.5.
    inverse_half = np.float32(1.0 / width) * (1.0 + 0.06 * np.clip(v, 0.0, 1.5) ** 2)
    shoulders = frame.window(-1.6, 1.6, -1.6, -0.5)
    if shoulders is not None:
        profile = np.interp(v[shoulders], [-1.3, -1.0, -0.86, -0.7, -0.5], [0.24, 0.28, 0.5, 0.88, 1.0])
        inverse_half[shoulders] = np.float32(1.0 / width) / profile.astype(np.float32)
    across = u * inverse_half
    canvas.tissue += 2.0 * np.sqrt(np.clip(1.0 - across * across, 0.0, 1.0))
    canvas.tissue += 0.25 * np.clip(v - 0.35, 0.0, 1.0)
    z = spec.anatomy
    for side in (-1.0, 1.0):
        window = frame.window(side * 0.02, side * 0.78, -1.0, -0.45)
        if window is not None:
            x = frame.u[window] * side
            lift = 0.06 if spec.view == "AP" else 0.0
            centre = -0.58 - lift - (0.33 - lift) * x + 0.12 * x * x
            shaft = np.clip(1.0 - ((frame.v[window] - centre) * np.float32(1.0 / 0.042)) ** 2, 0.0, 1.0)
            extent = np.clip((x - 0.05) * 25, 0.0, 1.0) * np.clip((0.72 - x) * 25, 0.0, 1.0)
            canvas.tissue[window] += 0.3 * np.sqrt(shaft) * extent
        if z["breast"]:
            size = 0.2 + 0.03 * z["breast_size"]
            window = frame.window(side * 0.55 - 0.5, side * 0.55 + 0.5, -0.1, 0.95)
            if window is not None:
                du, dv = frame.u[window] - side * 0.5, (frame.v[window] - 0.45) * 1.3
                canvas.tissue[window] += 0.3 * _sphere(du, dv, 2.0 * size)


def _draw_spine_and_mediastinum(canvas: _Canvas, anatomy: _Anatomy) -> None:
    frame = canvas.frame
    window = frame.window(-0.2, 0.2, -1.3, 1.3)
    if window is None:
        return
    u, v = frame.u[window] - np.float32(anatomy.spine), frame.v[window]
    body = np.clip(1.0 - (u * np.float32(1.0 / 0.075)) ** 2, 0.0, 1.0)
    vertebrae = 0.9 + 0.1 * np.cos(v * np.float32(2 * np.pi / 0.085))
    canvas.tissue[window] += 0.22 * np.sqrt(body) * vertebrae
    # Trachea: an air column down to the carina.
    trachea = np.clip(1.0 - (u * np.float32(1.0 / 0.034)) ** 2, 0.0, 1.0) * np.clip((-0.18 - v) * 12, 0.0, 1.0)
    canvas.tissue[window] -= 0.3 * np.sqrt(trachea)


def _draw_lungs(canvas: _Canvas, anatomy: _Anatomy, mediastinum: tuple) -> np.ndarray:
    """Lung air, thinner towards the edges; the mediastinum and heart displace it. Returns the lung mask."""
    frame = canvas.frame
    mask = np.zeros_like(frame.u)
    for side in (0, 1):
        sign = -1.0 if side == 0 else 1.0
        u0, u1 = sorted((sign * (anatomy.medial[side] - 0.03), sign * (anatomy.lateral[side] + 0.03)))
        window = frame.window(u0, u1, anatomy.apex[side] - 0.03, anatomy.cp[side] + 0.03)
        if window is None:
            continue
        distance = _lung_distance(frame.u[window], frame.v[window], anatomy, side)
        inside = _ramp(distance, 1.5 * frame.pixel)
        canvas.air[window] += inside * (0.6 + 0.65 * np.clip(distance * np.float32(1.0 / 0.14), 0.0, 1.0))
        np.maximum(mask[window], inside, out=mask[window])
    # A little lung stays visible behind the heart.
    window, silhouette, _ = mediastinum
    canvas.air[window] *= 1.0 - 0.9 * silhouette
    canvas.air *= anatomy.air
    return mask


def _draw_ribs(canvas: _Canvas, anatomy: _Anatomy, lungs: np.ndarray) -> None:
    frame = canvas.frame
    x = np.abs(frame.u - np.float32(anatomy.spine))
    v = frame.v
    spacing = anatomy.rib_spacing
    # Posterior ribs leave the spine almost level, then sweep down along the lateral wall; the interspaces widen
    # downwards.
    posterior = v - (0.46 * x * x - 0.06 * x) - np.float32(anatomy.apex[0] - 0.08)
    phase = posterior * np.float32(1.0 / spacing)
    phase = phase + 0.05 * phase * phase + anatomy.rib_phase
    band = np.clip((np.cos(phase * np.float32(2 * np.pi)) + 0.1) * np.float32(1.0 / 0.5), 0.0, 1.0)
    ribs = 0.09 * band + 0.1 * band * (1.0 - band)
    # Anterior ribs run down and inwards from the wall and fade into the costal cartilages.
    anterior = v + (0.55 * x - 0.12 * x * x) - np.float32(anatomy.apex[0] + 0.3)
    band_a = np.clip((np.cos(anterior * np.float32(2 * np.pi / (spacing * 1.15))) - 0.55) * 2.2, 0.0, 1.0)
    ribs += 0.07 * band_a * np.clip((x - 0.32) * 6.0, 0.0, 1.0)
    thorax = np.clip((np.float32(max(anatomy.cp) + 0.1) - v) * 8.0, 0.0, 1.0)
    thorax *= np.clip((v - np.float32(anatomy.apex[0] - 0.12)) * 8.0, 0.0, 1.0)
    thorax *= np.clip((np.float32(anatomy.body_width * 0.93) - x) * 10.0, 0.0, 1.0)
    canvas.tissue += ribs * thorax * (0.35 + 0.65 * lungs)


def _draw_markings(canvas: _Canvas, anatomy: _Anatomy, lungs: np.ndarray, rng: np.random.Generator) -> None:
    """Hila and the branching vessels that radiate from them, tapering towards the periphery. The vessels are thin
    ridges of noise laid out in polar coordinates around each hilum (long along the radius, narrow across it)."""
    frame = canvas.frame
    for side in (-1.0, 1.0):
        hu = side * 0.2 + 0.02
        window = frame.window(hu - 0.15, hu + 0.15, anatomy.hilum_v - 0.25, anatomy.hilum_v + 0.25)
        if window is not None:
            du, dv = frame.u[window] - np.float32(hu), frame.v[window] - np.float32(anatomy.hilum_v)
            canvas.tissue[window] += anatomy.hila * np.exp(
                -(du * du) * np.float32(1 / 0.06**2) - (dv * dv) * np.float32(1 / 0.11**2)
            )
    # Texture in (radius, angle): angle spans the right lung [-pi, pi) then the left [pi, 3 pi).
    n_r, n_t = max(frame.size // 4, 48), max(frame.size, 256)
    r_max = 1.3
    radius = (np.arange(n_r, dtype=np.float32) * np.float32(r_max / (n_r - 1)))[:, None]
    texture = np.zeros((n_r, n_t), np.float32)
    for cells_t, sharp, weight in ((40, (1.2, 22.0), 1.0), (100, (2.5, 40.0), 0.5)):
        noise = _smooth_noise(rng, (n_r, n_t), (max(int(cells_t / 10), 3), cells_t))
        texture += weight * _ridges(noise, sharp[0] + sharp[1] * radius)
    # vessels leave the hilum's edge rather than its centre, and fade towards the periphery
    texture *= np.exp(-radius * np.float32(1.0 / 0.5)) * np.clip((radius - 0.05) * 10.0, 0.0, 1.0)
    du = np.abs(frame.u - np.float32(0.02)) - np.float32(0.2)
    dv = frame.v - np.float32(anatomy.hilum_v)
    r = np.sqrt(du * du + dv * dv)
    angle = np.arctan2(dv, du)
    angle += (frame.u > 0.02) * np.float32(2 * np.pi)
    rows = np.minimum(r * np.float32((n_r - 1) / r_max) + 0.5, n_r - 1).astype(np.intp)
    cols = ((angle + np.float32(np.pi)) * np.float32((n_t - 1) / (4 * np.pi)) + 0.5).astype(np.intp)
    rows *= n_t
    rows += cols
    canvas.markings = texture.ravel().take(rows) * lungs * np.float32(anatomy.markings)


def _draw_gastric_bubble(canvas: _Canvas, anatomy: _Anatomy, spec: _Spec) -> None:
    if not spec.anatomy["gastric_bubble"]:
        return
    frame = canvas.frame
    cu, cv = 0.36, anatomy.dome[1] + 0.12
    window = frame.window(cu - 0.15, cu + 0.15, cv - 0.1, cv + 0.1)
    if window is None:
        return
    du, dv = frame.u[window] - np.float32(cu), frame.v[window] - np.float32(cv)
    gas = _sphere(du, dv * np.float32(1.5), 0.09) * (dv < 0.015)
    canvas.tissue[window] -= 0.5 * gas


def _draw_scapulae(canvas: _Canvas, anatomy: _Anatomy) -> None:
    """On AP films the scapulae cannot be rotated out of the lung fields: a faint band over each upper zone."""
    frame = canvas.frame
    for side in (-1.0, 1.0):
        window = frame.window(side * 0.45, side * 0.95, -0.8, 0.05)
        if window is None:
            continue
        x, v = frame.u[window] * side, frame.v[window]
        border = 0.52 + 0.18 * (v + 0.75)
        blade = np.clip((x - border) * 30.0, 0.0, 1.0) * np.clip((0.0 - v) * 6.0, 0.0, 1.0)
        canvas.tissue[window] += 0.12 * blade * np.clip((v + 0.78) * 6.0, 0.0, 1.0)


# --------------------------------------------------------------------------------------------------------------------
# Findings. Each has its own random stream and a strength k in (0, 1] set by the difficulty.


def _region(frame: _Frame, cu: float, cv: float, ru: float, rv: float):
    window = frame.window(cu - ru, cu + ru, cv - rv, cv + rv)
    if window is None:
        return None, None, None
    return window, frame.u[window] - np.float32(cu), frame.v[window] - np.float32(cv)


def _draw_round(canvas: _Canvas, anatomy: _Anatomy, rng, k: float, label: str, radii: tuple, lobes: int) -> None:
    """Nodule (small) and Mass (large, often lobulated): round soft-tissue opacities in a lung."""
    side = int(rng.integers(2))
    cu, cv = _lung_point(anatomy, side, float(rng.uniform(0.15, 0.8)), float(rng.uniform(0.3, 0.8)))
    radius = float(rng.uniform(*radii)) * (0.75 + 0.25 * k)
    window, du, dv = _region(canvas.frame, cu, cv, 2.0 * radius, 2.0 * radius)
    if window is None:
        return
    density = _sphere(du, dv, radius)
    for _ in range(lobes - 1):
        offset = rng.normal(0.0, 0.45 * radius, 2)
        np.maximum(density, _sphere(du - np.float32(offset[0]), dv - np.float32(offset[1]), 0.7 * radius), out=density)
    change = density * np.float32((0.4 + 0.25 * float(rng.random())) * k)
    canvas.tissue[window] += change
    canvas.box(label, change, window)


_AIRSPACE = {
    # density range, radius range, noise cells across the patch, noise offset (more = more confluent)
    "Infiltration": ((0.3, 0.5), (0.1, 0.2), 7, 0.0),
    "Pneumonia": ((0.5, 0.75), (0.13, 0.22), 5, 0.6),
    "Consolidation": ((0.75, 0.92), (0.1, 0.17), 4, 1.3),
}


def _draw_airspace(canvas: _Canvas, anatomy: _Anatomy, rng, k: float, label: str) -> None:
    """Infiltration (faint, patchy, sometimes multifocal), Pneumonia (denser, more confluent) and Consolidation
    (dense, homogeneous, with air bronchograms): lung air replaced by fluid under a soft envelope."""
    frame = canvas.frame
    density_range, radii, cells, cover = _AIRSPACE[label]
    count = int(rng.integers(1, 3)) if label == "Infiltration" else 1
    for _ in range(count):
        side = int(rng.integers(2))
        cu, cv = _lung_point(anatomy, side, float(rng.uniform(0.35, 0.92)), float(rng.uniform(0.3, 0.75)))
        ru = float(rng.uniform(*radii))
        rv = ru * float(rng.uniform(0.8, 1.3))
        window, du, dv = _region(frame, cu, cv, ru, rv)
        if window is None:
            continue
        envelope = np.clip(1.0 - (du * np.float32(1.0 / ru)) ** 2 - (dv * np.float32(1.0 / rv)) ** 2, 0.0, 1.0)
        noise = _smooth_noise(rng, du.shape, (cells, cells)) + 0.25 * _smooth_noise(
            rng, du.shape, (3 * cells, 3 * cells)
        )
        opacity = np.clip((noise + cover) * 0.6 + 0.2, 0.0, 1.0) * envelope
        if label == "Consolidation":
            # air bronchograms: branching lucent tubes, noise stretched along the bronchi's mostly vertical course
            opacity *= 1.0 - 0.5 * _ridges(_smooth_noise(rng, du.shape, (2, 6)), 4.0)
        opacity *= np.float32(float(rng.uniform(*density_range)) * k)
        air = canvas.air[window]
        change = air * opacity
        canvas.air[window] = air - change
        canvas.markings[window] *= 1.0 - opacity
        canvas.box(label, change, window)


def _draw_effusion(canvas: _Canvas, anatomy: _Anatomy, rng, k: float) -> None:
    """Pleural fluid: blunts the costophrenic angle, hides the dome as it grows and climbs the lateral wall (the
    meniscus)."""
    frame = canvas.frame
    sides = (0, 1) if rng.random() < 0.35 else (int(rng.integers(2)),)
    for side in sides:
        height = float(rng.uniform(0.08, 0.55)) * (0.25 + 0.75 * k)
        sign = -1.0 if side == 0 else 1.0
        u0, u1 = sorted((sign * 0.02, sign * (anatomy.lateral[side] + 0.05)))
        window = frame.window(u0, u1, anatomy.cp[side] - height - 0.1, anatomy.cp[side] + 0.05)
        if window is None:
            continue
        x = frame.u[window] * np.float32(sign)
        v = frame.v[window]
        across = np.clip(
            (x - anatomy.medial[side]) * np.float32(1.0 / (anatomy.lateral[side] - anatomy.medial[side])), 0, 1
        )
        # concave upwards: lowest medially, climbing the lateral wall
        surface = np.float32(anatomy.cp[side]) - np.float32(height) * (0.35 + 0.65 * across * across)
        fluid = np.clip((v - surface) * np.float32(1.0 / 0.035), 0.0, 1.0) * np.float32(0.4 + 0.6 * k)
        air = canvas.air[window]
        change = air * fluid
        canvas.air[window] = air - change
        canvas.markings[window] *= 1.0 - fluid
        canvas.box("Effusion", change, window)


def _draw_pneumothorax(canvas: _Canvas, anatomy: _Anatomy, rng, k: float) -> None:
    """Air between the chest wall and the collapsed lung: a thin visceral pleural line, no markings beyond it."""
    frame = canvas.frame
    side = int(rng.integers(2))
    shrink = float(rng.uniform(0.06, 0.22)) * (0.3 + 0.7 * k)
    sign = -1.0 if side == 0 else 1.0
    u0, u1 = sorted((0.0, sign * (anatomy.lateral[side] + 0.05)))
    window = frame.window(u0, u1, anatomy.apex[side] - 0.05, anatomy.cp[side] + 0.05)
    if window is None:
        return
    u, v = frame.u[window], frame.v[window]
    # The collapsed lung is the lung shrunk towards its lower mediastinal corner: on an erect film the air collects
    # over the apex and along the lateral wall.
    pivot_x, pivot_v = anatomy.medial[side] + 0.05, anatomy.cp[side]
    grow = np.float32(1.0 / (1.0 - shrink))
    su = np.float32(sign) * (np.float32(pivot_x) + (u * np.float32(sign) - np.float32(pivot_x)) * grow)
    sv = np.float32(pivot_v) + (v - np.float32(pivot_v)) * grow
    lung = _ramp(_lung_distance(u, v, anatomy, side), 1.5 * frame.pixel)
    collapsed = _lung_distance(su, sv, anatomy, side) * np.float32(1.0 - shrink)
    space = lung * _ramp(-collapsed, 1.5 * frame.pixel)
    line = np.clip(1.0 - np.abs(collapsed) * np.float32(1.0 / (1.2 * frame.pixel + 0.002)), 0.0, 1.0) * lung
    canvas.markings[window] *= 1.0 - space
    canvas.air[window] += space * np.float32(0.4 * k)
    canvas.tissue[window] += np.float32(0.25 * k) * line
    canvas.box("Pneumothorax", np.maximum(space, line), window, fraction=0.5)


def _draw_atelectasis(canvas: _Canvas, anatomy: _Anatomy, rng, k: float, side: int, lobar: bool) -> None:
    """Plate-like (a thin band at a base) or lobar collapse (a wedge fanning out from the hilum); the volume loss
    (a raised hemidiaphragm) is applied to the anatomy."""
    frame = canvas.frame
    if not lobar:
        cu, cv = _lung_point(anatomy, side, float(rng.uniform(0.68, 0.85)), float(rng.uniform(0.35, 0.6)))
        half = float(rng.uniform(0.08, 0.16))
        thickness = float(rng.uniform(0.012, 0.028)) * (0.7 + 0.3 * k)
        tilt = float(rng.uniform(-0.3, 0.3))
        window, du, dv = _region(frame, cu, cv, half + 0.05, half * 0.35 + 0.05)
        if window is None:
            return
        along = du * np.float32(np.cos(tilt)) + dv * np.float32(np.sin(tilt))
        across = dv * np.float32(np.cos(tilt)) - du * np.float32(np.sin(tilt))
        shape = np.clip(1.0 - (across * np.float32(1.0 / thickness)) ** 2, 0.0, 1.0)
        shape *= np.clip((half - np.abs(along)) * 20.0, 0.0, 1.0)
        opacity = shape * np.float32(0.8 * k)
    else:
        sign = -1.0 if side == 0 else 1.0
        hu, hv = sign * 0.2, anatomy.hilum_v
        reach = float(rng.uniform(0.3, 0.45))
        # upper lobe collapse fans upwards and out, lower lobe collapse downwards behind the heart or the dome
        pointing = float(rng.uniform(-2.2, -1.5)) if rng.random() < 0.5 else float(rng.uniform(1.1, 1.5))
        spread = float(rng.uniform(0.3, 0.5))
        window, du, dv = _region(frame, hu, hv, reach, reach)
        if window is None:
            return
        du = du * np.float32(sign)
        radius = np.sqrt(du * du + dv * dv)
        angle = np.abs((np.arctan2(dv, du) - np.float32(pointing) + np.float32(np.pi)) % np.float32(2 * np.pi) - np.pi)
        wedge = np.clip((spread - angle) * 6.0, 0.0, 1.0) * np.clip((reach - radius) * 10.0, 0.0, 1.0)
        opacity = wedge * np.float32(0.8 * k)
    air = canvas.air[window]
    change = air * opacity
    canvas.air[window] = air - change
    canvas.markings[window] *= 1.0 - opacity
    canvas.box("Atelectasis", change, window)


def _box_cardiomegaly(canvas: _Canvas, mediastinum: tuple, anatomy: _Anatomy) -> None:
    """The enlarged heart is drawn with the anatomy; its box is the silhouette above the diaphragm."""
    window, _, heart = mediastinum
    visible = heart * (canvas.frame.v[window] < np.float32(max(anatomy.dome)))
    canvas.box("Cardiomegaly", visible, window, fraction=0.5)


def _draw_edema(canvas: _Canvas, anatomy: _Anatomy, rng, k: float) -> None:
    """Bilateral perihilar haze ("bat wing") with Kerley B lines at the lateral bases."""
    frame = canvas.frame
    du = np.abs(frame.u - np.float32(0.02)) - np.float32(0.22)
    dv = frame.v - np.float32(anatomy.hilum_v + 0.05)
    haze = np.exp(-(du * du) * np.float32(1.0 / 0.05) - (dv * dv) * np.float32(1.0 / 0.09))
    haze *= 0.75 + 0.25 * _smooth_noise(rng, du.shape, (8, 8))
    opacity = np.clip(haze, 0.0, 1.0) * np.float32(0.75 * k)
    canvas.air -= canvas.air * opacity
    for side in (0, 1):
        lateral = (-1.0 if side == 0 else 1.0) * anatomy.lateral[side]
        window = frame.window(lateral - 0.12, lateral + 0.12, anatomy.cp[side] - 0.3, anatomy.cp[side])
        if window is None:
            continue
        lines = np.clip((np.cos(frame.v[window] * np.float32(2 * np.pi / 0.035)) - 0.75) * 4.0, 0.0, 1.0)
        edge = np.clip(1.0 - np.abs(frame.u[window] - np.float32(lateral)) * np.float32(1.0 / 0.08), 0.0, 1.0)
        canvas.tissue[window] += np.float32(0.1 * k) * lines * edge


def _draw_fibrosis(canvas: _Canvas, anatomy: _Anatomy, rng, k: float) -> None:
    """Coarse reticular lines in both lungs, basal and peripheral, with some volume loss (applied to the anatomy)."""
    frame = canvas.frame
    cells = max(int(34 * frame.scale), 6)
    net = _ridges(_smooth_noise(rng, (frame.size, frame.size), (cells, cells)), 4.0)
    weight = np.clip((np.abs(frame.u) - 0.3) * 3.0 + 0.3, 0.0, 1.0) * np.clip((frame.v + 0.1) * 2.0, 0.0, 1.0)
    canvas.tissue += np.float32(0.3 * k) * net * weight * np.clip(canvas.air * 2.0, 0.0, 1.0)


def _draw_pleural_thickening(canvas: _Canvas, anatomy: _Anatomy, rng, k: float) -> None:
    """A band of pleural soft tissue along the lateral chest wall or over an apex (apical cap)."""
    frame = canvas.frame
    for side in (0, 1) if rng.random() < 0.3 else (int(rng.integers(2)),):
        sign = -1.0 if side == 0 else 1.0
        apical = rng.random() < 0.4
        v0, v1 = (anatomy.apex[side] - 0.05, anatomy.apex[side] + 0.35) if apical else (-0.3, anatomy.cp[side] + 0.02)
        u0, u1 = sorted((0.0, sign * (anatomy.lateral[side] + 0.05)))
        window = frame.window(u0, u1, v0, v1)
        if window is None:
            continue
        u, v = frame.u[window], frame.v[window]
        distance = _lung_distance(u, v, anatomy, side)
        thickness = float(rng.uniform(0.03, 0.06)) * (0.4 + 0.6 * k) * (1.0 + 0.4 * _smooth_noise(rng, u.shape, (5, 5)))
        band = _ramp(thickness - distance, 1.5 * frame.pixel) * _ramp(distance + frame.pixel, frame.pixel)
        extent = np.clip((v - v0) * 8.0, 0.0, 1.0) * np.clip((v1 - v) * 8.0, 0.0, 1.0)
        opacity = band * extent * np.float32(0.3 + 0.7 * k)
        canvas.air[window] -= canvas.air[window] * opacity
        canvas.tissue[window] += 0.1 * opacity


def _draw_hernia(canvas: _Canvas, anatomy: _Anatomy, rng, k: float) -> None:
    """Hiatus hernia: a gas bubble behind the heart above the diaphragm, often with an air-fluid level."""
    frame = canvas.frame
    cu = float(rng.uniform(0.02, 0.12))
    cv = anatomy.dome[1] - float(rng.uniform(0.12, 0.2))
    ru, rv = float(rng.uniform(0.09, 0.14)) * (0.7 + 0.3 * k), float(rng.uniform(0.07, 0.1)) * (0.7 + 0.3 * k)
    window, du, dv = _region(frame, cu, cv, ru * 1.3, rv * 1.3)
    if window is None:
        return
    r = np.sqrt((du * np.float32(1.0 / ru)) ** 2 + (dv * np.float32(1.0 / rv)) ** 2)
    gas = np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0))
    if rng.random() < 0.6:
        gas *= np.clip((np.float32(rv * 0.35) - dv) * np.float32(1.0 / (2 * frame.pixel)), 0.0, 1.0)
    wall = np.clip(1.0 - np.abs(r - 1.05) * 12.0, 0.0, 1.0)
    canvas.tissue[window] += (0.08 * wall - 0.55 * gas) * np.float32(k)


def _draw_nipples(canvas: _Canvas, anatomy: _Anatomy, spec: _Spec, difficulty: float) -> None:
    """Nipple shadows: normal small round densities over the lower zones that mimic nodules."""
    if spec.anatomy["nipple_draw"] >= 0.1 + 0.3 * difficulty:
        return
    for side in (-1.0, 1.0):
        window, du, dv = _region(canvas.frame, side * 0.5, anatomy.cp[0] - 0.2, 0.05, 0.05)
        if window is not None:
            canvas.tissue[window] += 0.25 * _sphere(du, dv, 0.022)


def _render(spec: _Spec, size: int, difficulty: float, seed: int, without: frozenset = frozenset()):
    """The 8-bit image of one plan entry and the boxes of its drawn box-file findings. `without` leaves findings
    out while keeping every other random draw, so the difference shows exactly what a finding changed."""
    rng = np.random.default_rng([seed, spec.index, 0])
    spread = 0.5 + difficulty
    findings = [name for name in spec.findings if name not in without]
    streams = {
        name: np.random.default_rng([seed, spec.index, 1 + NIH_CHESTXRAY14_LABELS.index(name)]) for name in findings
    }
    low, high = max(0.05, 1.0 - 1.5 * difficulty), 1.0 - 0.3 * difficulty
    strengths = {name: float(streams[name].uniform(low, high)) for name in findings}
    collapse = ()
    if "Atelectasis" in strengths:
        stream = streams["Atelectasis"]
        collapse = (int(stream.integers(2)), bool(stream.random() < 0.4), strengths["Atelectasis"])

    ap = spec.view == "AP"
    angle = np.deg2rad((2.0 + 6.0 * difficulty) * float(rng.uniform(-1.0, 1.0)))
    scale = 0.93 * (1.0 + 0.04 * spread * spec.anatomy["body_scale"])
    shift = (0.025 * spread * float(rng.standard_normal()), 0.06 + 0.025 * spread * float(rng.standard_normal()))
    frame = _Frame(size, scale, shift, angle)
    canvas = _Canvas(frame)
    anatomy = _anatomy(spec, rng, spread, strengths, collapse)

    _draw_body(canvas, anatomy, spec)
    _draw_spine_and_mediastinum(canvas, anatomy)
    mediastinum = _mediastinum(frame, anatomy)
    lungs = _draw_lungs(canvas, anatomy, mediastinum)
    _draw_ribs(canvas, anatomy, lungs)
    _draw_markings(canvas, anatomy, lungs, rng)
    _draw_gastric_bubble(canvas, anatomy, spec)
    if ap:
        _draw_scapulae(canvas, anatomy)
    _draw_nipples(canvas, anatomy, spec, difficulty)

    for name in findings:
        k, stream = strengths[name], streams[name]
        if name == "Nodule":
            for _ in range(1 + int(stream.random() < 0.2) + int(stream.random() < 0.05)):
                _draw_round(canvas, anatomy, stream, k, name, (0.018, 0.042), 1)
        elif name == "Mass":
            _draw_round(canvas, anatomy, stream, k, name, (0.065, 0.13), int(stream.integers(1, 4)))
        elif name in _AIRSPACE:
            _draw_airspace(canvas, anatomy, stream, k, name)
        elif name == "Effusion":
            _draw_effusion(canvas, anatomy, stream, k)
        elif name == "Pneumothorax":
            _draw_pneumothorax(canvas, anatomy, stream, k)
        elif name == "Atelectasis":
            _draw_atelectasis(canvas, anatomy, stream, k, collapse[0], collapse[1])
        elif name == "Cardiomegaly":
            _box_cardiomegaly(canvas, mediastinum, anatomy)
        elif name == "Edema":
            _draw_edema(canvas, anatomy, stream, k)
        elif name == "Fibrosis":
            _draw_fibrosis(canvas, anatomy, stream, k)
        elif name == "Pleural_Thickening":
            _draw_pleural_thickening(canvas, anatomy, stream, k)
        elif name == "Hernia":
            _draw_hernia(canvas, anatomy, stream, k)

    attenuation = canvas.tissue
    attenuation -= canvas.air
    attenuation += 0.3 * canvas.markings
    # Heel effect: the exposure falls off along the tube's anode-cathode axis.
    attenuation += np.float32(0.05 * float(rng.standard_normal())) * frame.v
    exposure = 1.45 + 0.07 * spread * float(rng.standard_normal())
    contrast = 0.55 * (1.0 + 0.25 * difficulty * float(rng.random())) * (1.1 if ap else 1.0)
    attenuation -= np.float32(exposure)
    attenuation *= np.float32(-1.0 / contrast)
    image = 1.0 / (1.0 + np.exp(attenuation))
    sigma = (0.008 + 0.03 * difficulty) * (1.4 if ap else 1.0)
    image += np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)
    image *= 255.0
    image += 0.5
    pixels = np.clip(image, 0.0, 255.0).astype(np.uint8)
    boxes = tuple(PhantomBox(*box) for box in canvas.boxes if box[0] in BOX_LABELS)
    return pixels, boxes


# --------------------------------------------------------------------------------------------------------------------
# Writing the corpus.


def _data_entry_row(spec: _Spec, image: PhantomImage) -> str:
    width, height = spec.original_size
    return (
        f"{spec.file_name},{image.finding_labels},{spec.follow_up},{spec.patient},{spec.age},{spec.gender},"
        f"{spec.view},{width},{height},{spec.spacing},{spec.spacing}\n"
    )


def _box_row(file_name: str, box: PhantomBox) -> str:
    label = BOX_FILE_SPELLING.get(box.label, box.label)
    return f"{file_name},{label},{box.x!r},{box.y!r},{box.w!r},{box.h!r}\n"


def generate_phantoms(
    output_dir: str | Path,
    num_images: int,
    *,
    size: int = 1024,
    seed: int = 0,
    difficulty: str | float = DIFFICULTY,
    progress: bool = False,
) -> PhantomCorpus:
    """Write `num_images` synthetic chest radiographs and their metadata to `output_dir` in NIH ChestX-ray14's
    on-disk format, and return exactly what was written. Same arguments, byte-identical files."""
    if int(num_images) < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    if int(size) < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    level = resolve_difficulty(difficulty)
    output = Path(output_dir)
    specs = _plan(int(num_images), int(seed))
    # Images left by another corpus would sit in images/ without a CSV row; refuse rather than delete them.
    names = {spec.file_name for spec in specs}
    strangers = sorted(p.name for p in (output / "images").glob("*.png") if p.name not in names)
    if strangers:
        raise ValueError(
            f"{output / 'images'} holds {len(strangers)} PNG file(s) that are not part of this corpus "
            f"(e.g. {', '.join(strangers[:3])}); write the phantoms to an empty directory"
        )
    (output / "images").mkdir(parents=True, exist_ok=True)

    iterator = tqdm(specs, desc="phantoms", unit="img") if progress else specs
    images = []
    for spec in iterator:
        pixels, boxes = _render(spec, int(size), level, int(seed))
        Image.fromarray(pixels).save(output / "images" / spec.file_name, **_PNG_OPTIONS)
        labels = tuple(float(name in spec.findings) for name in NIH_CHESTXRAY14_LABELS)
        images.append(
            PhantomImage(
                file_name=spec.file_name,
                patient_id=f"{spec.patient:08d}",
                follow_up=spec.follow_up,
                age=spec.age,
                gender=spec.gender,
                view=spec.view,
                split=spec.split,
                labels=labels,
                boxes=boxes if spec.split == "test" else (),
            )
        )

    with open(output / "Data_Entry_2017.csv", "w", newline="", encoding="utf-8") as handle:
        handle.write(DATA_ENTRY_HEADER + "\n")
        handle.writelines(_data_entry_row(spec, image) for spec, image in zip(specs, images, strict=True))
    for name, split in (("train_val_list.txt", "train_val"), ("test_list.txt", "test")):
        with open(output / name, "w", newline="", encoding="utf-8") as handle:
            handle.writelines(f"{image.file_name}\n" for image in images if image.split == split)
    with open(output / "BBox_List_2017.csv", "w", newline="", encoding="utf-8") as handle:
        handle.write(BBOX_HEADER + "\n")
        handle.writelines(_box_row(image.file_name, box) for image in images for box in image.boxes)
    record = {"generator": PHANTOM_GENERATOR, "num_images": len(images), "size": int(size), "seed": int(seed),
              "difficulty": level}  # fmt: skip
    (output / PHANTOM_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return PhantomCorpus(output_dir=output, size=int(size), seed=int(seed), difficulty=level, images=tuple(images))


# --------------------------------------------------------------------------------------------------------------------
# Planting a finding into an image that already exists (anomaly-detection experiments).

# The radius range (patient units) `_render` draws the Nodule finding with; about 0.8 to 2 % of the image width.
NODULE_RADII = (0.018, 0.042)
# The film curve of a PA image at its nominal contrast, before the difficulty lowers it (see the end of `_render`).
_PA_CONTRAST = 0.55


@lru_cache(maxsize=1)
def _average_anatomy() -> _Anatomy:
    """The anatomy `_render` varies around: a PA film of a patient with every per-patient and per-image variation at
    zero (with no spread, `_anatomy` ignores its random draws)."""
    spec = _Spec(
        index=0,
        file_name="",
        patient=0,
        follow_up=0,
        age=0,
        gender="M",
        view="PA",
        split="",
        findings=(),
        anatomy=dict.fromkeys(_ANATOMY_KEYS, 0.0),
    )
    return _anatomy(spec, np.random.default_rng(0), 0.0, {}, ())


def plant_nodule(
    image: np.ndarray, rng: np.random.Generator, *, strength: float = 1.0, radii: tuple[float, float] = NODULE_RADII
) -> tuple[np.ndarray, PhantomBox]:
    """Draw one nodule into an existing phantom image, the way the generator draws the Nodule finding, and return the
    planted copy and the nodule's box.

    The opacity is the generator's own round-opacity drawing (position in a random lung, radius, density), placed on
    the average phantom anatomy because a corpus does not store each image's: in 755 plantings into 151 healthy
    phantoms, 98.3 / 99.2 / 99.7 % of the centres (hard / medium / easy) landed inside that image's own lung
    outline. It is added to the attenuation behind each pixel, through the film curve inverted at the nominal PA
    contrast, so it brightens the film as if it had been drawn with the image.

    Args:
        image: a square (H, H) float array in [0, 1], e.g. `load_radiograph` of a phantom PNG (H ≥ 32).
        rng: the random stream that picks the lung, the position, the radius and the density.
        strength: the generator's conspicuity k in (0, 1]; it scales the density and, by a quarter, the radius.
        radii: radius range in patient units (the half-width of the field of view is about 1.07); the default is
            the generator's Nodule range.

    Returns:
        `(planted, box)`: a copy of `image` (same dtype) with the nodule, and a `PhantomBox` labelled `Nodule` in
        pixels of `image`, the tight box of every pixel the nodule covers. Pixels outside the box are unchanged.

    Raises:
        ValueError: `image` is not a square 2-D array of values in [0, 1], an argument is out of range, or the
            nodule drawn is smaller than a pixel at this image size.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.shape[0] != image.shape[1] or image.shape[0] < 32:
        raise ValueError(f"image has shape {image.shape}; expected a square (H, H) array with H >= 32, as phantoms are")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image has dtype {image.dtype}; expected floats in [0, 1] (as load_radiograph returns)")
    low, high = float(image.min()), float(image.max())
    if not 0 <= low <= high <= 1:  # also false for NaN
        raise ValueError(f"image values span [{low}, {high}]; expected floats in [0, 1]")
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if len(radii) != 2 or not 0 < radii[0] <= radii[1]:
        raise ValueError(f"radii must be (low, high) with 0 < low <= high, got {radii}")

    size = image.shape[0]
    # The average frame of `_render`: scale 0.93, centred 0.06 below the middle, no rotation.
    canvas = _Canvas(_Frame(size, 0.93, (0.0, 0.06), 0.0))
    _draw_round(canvas, _average_anatomy(), rng, float(strength), "Nodule", (float(radii[0]), float(radii[1])), 1)
    covered = canvas.tissue > 0
    if not covered.any():
        raise ValueError(
            f"the nodule drawn is smaller than one pixel of a {size}x{size} image; use a larger image or larger radii"
        )
    # Half a gray level from black and white keeps the logit finite.
    film = np.clip(image[covered].astype(np.float64), 0.5 / 255, 1 - 0.5 / 255)
    logit = np.log(film) - np.log1p(-film) + canvas.tissue[covered] / _PA_CONTRAST
    planted = image.copy()
    planted[covered] = 1.0 / (1.0 + np.exp(-logit))
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    box = PhantomBox(
        "Nodule", float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])
    )
    return planted, box


def phantom_record(data_dir: str | Path | None) -> dict | None:
    """What `generate_phantoms` or `write_phantom_layout` recorded about the corpus in `data_dir` (generator, layout
    but for NIH's, image count, size, seed, difficulty), also found in a `cxr-vitmae prepare` copy of it; `None` for
    any other directory (or none). Recipes and `cxr-vitmae evaluate` copy it into `training_args.json` and
    `metrics.json`, so that a model card never presents results on phantoms as results on the corpus whose format they
    borrow."""
    if data_dir is None or not (Path(data_dir) / PHANTOM_RECORD).is_file():
        return None
    path = Path(data_dir) / PHANTOM_RECORD
    try:
        record = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(record, dict) or record.get("generator") != PHANTOM_GENERATOR:
        raise ValueError(f"{path}: expected the record `cxr-vitmae phantoms` writes, got {record!r}")
    return record


__all__ = [
    "BBOX_HEADER",
    "BOX_LABELS",
    "DATA_ENTRY_HEADER",
    "DIFFICULTY",
    "DIFFICULTY_CHOICES",
    "DIFFICULTY_LEVELS",
    "NODULE_RADII",
    "PHANTOM_RECORD",
    "PhantomBox",
    "PhantomCorpus",
    "PhantomImage",
    "generate_phantoms",
    "phantom_record",
    "plant_nodule",
    "resolve_difficulty",
]
