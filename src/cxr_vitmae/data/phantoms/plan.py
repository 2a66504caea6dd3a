"""The corpus plan: patients, follow-ups, ages, views, findings and the NIH train_val/test split, drawn from the seed
alone, so that labels, patients and splits never depend on the image size or the difficulty.

Labels, co-occurrence (heart failure, infection, collapse next to fluid, COPD, fibrotic lung) and prevalence follow
NIH's label file, about 54 % No Finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...models.chest_xray_labels import NIH_CHESTXRAY14_LABELS

# NIH's test list holds 25,596 of its 112,120 images.
TEST_FRACTION = 25_596 / 112_120


@dataclass(frozen=True)
class Prevalence:
    """What the plan draws labels from: finding counts (every NIH name) over `images` images, `no_finding` of which
    have none. Other corpora's layouts pass their own (`layout_files`)."""

    counts: dict[str, float]
    images: int
    no_finding: int


# NIH label counts over all 112,120 images, and the number with none. Hernia is raised from 450 / 2 = 0.2 % to 0.4 %
# so that a corpus of a few thousand images still holds some.
NIH_PREVALENCE = Prevalence(
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


@dataclass(frozen=True)
class ImagePlan:
    """One planned image: who, when, which view and split, the NIH findings drawn, and the patient's anatomy draws
    (`ANATOMY_KEYS`, standard normal, shared by all of the patient's images)."""

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

    @property
    def labels(self) -> tuple[float, ...]:
        """The 14-long multi-hot vector of `findings` in `NIH_CHESTXRAY14_LABELS` order."""
        return tuple(float(name in self.findings) for name in NIH_CHESTXRAY14_LABELS)


ANATOMY_KEYS = (
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


def _draw_findings(rng: np.random.Generator, prevalence: Prevalence = NIH_PREVALENCE) -> tuple[str, ...]:
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


def plan_corpus(
    num_images: int, seed: int, prevalence: Prevalence = NIH_PREVALENCE, test_fraction: float = TEST_FRACTION
) -> list[ImagePlan]:
    """The corpus plan, in file-name order: drawn from `default_rng([seed])` alone. Whole patients go to the test
    split until it holds `test_fraction` of the images (NIH's share by default)."""
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
    target = max(round(test_fraction * num_images), 1)
    test_patients: set[int] = set()
    test_images = 0
    for patient in order:
        if test_images >= target or len(test_patients) == len(per_patient) - 1:
            break
        test_patients.add(int(patient))
        test_images += per_patient[patient]

    specs: list[ImagePlan] = []
    spacings = (0.143, 0.143, 0.143, 0.139, 0.168, 0.171)
    widths = (2048, 2500, 2544, 2682, 2894, 2992, 3056)
    for patient, count in enumerate(per_patient):
        gender = "M" if rng.random() < 0.56 else "F"
        age = int(np.clip(rng.normal(48, 17), 1, 92))
        anatomy = {
            key: float(value) for key, value in zip(ANATOMY_KEYS, rng.standard_normal(len(ANATOMY_KEYS)), strict=True)
        }
        anatomy["nipple_draw"] = float(rng.random())
        anatomy["breast"] = float(gender == "F" and age > 16 and rng.random() < 0.85)
        anatomy["gastric_bubble"] = float(rng.random() < 0.65)
        for follow_up in range(count):
            findings = _draw_findings(rng, prevalence)
            view = "AP" if rng.random() < (0.52 if findings else 0.3) else "PA"
            original = (int(rng.choice(widths)), int(rng.choice(widths)))
            specs.append(
                ImagePlan(
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
