"""One plan entry rendered as an 8-bit frontal chest film: the anatomy and the normal chest, the findings, then the
film: everything is an attenuation map (soft tissue + bone - air), which a film-like sigmoid turns into brightness.

Acquisition varies per image: AP films (portable, sicker patients) have a magnified heart, poorer inspiration,
higher clavicles, scapulae over the upper zones, more noise and less contrast than PA films; exposure, heel effect,
position and a small rotation vary on every film.

`difficulty` d in [0, 1] (`arguments.DIFFICULTY_LEVELS` names three) sets:
- conspicuity: each drawn finding gets a strength k ~ U(max(0.05, 1 - 1.5 d), 1 - 0.3 d) that scales its density,
  size change or extent: at "easy" (0.2) every finding is plain (k ≥ 0.7), from "medium" on some are drawn at or
  below the noise;
- quantum noise: σ = 0.008 + 0.03 d of full scale, ×1.4 on AP films;
- variation: per-patient anatomy and per-image acquisition spread over (0.5 + d) × their nominal ranges (heart size,
  lung volume and lucency, dome heights, hilar size, position, exposure), rotation up to ±(2 + 6 d)°, and contrast
  drops by up to 25 % × d;
- confounders: nipple shadows (nodule mimics) in (10 + 30 d) % of patients.

`variation` v (default 1) multiplies the variation alone, leaving conspicuity, noise and confounders as the
difficulty sets them: anatomy and acquisition spread over (0.5 + d) v × their ranges, rotation up to ±(2 + 6 d) v°,
contrast drops by up to 25 % × d v. Real radiographs differ far more between patients than the default phantoms do
(anatomy size and position, rotation, inspiration, exposure); a larger v is the generator's stand-in for that, for
studies of what pre-training can learn (issue 27). v = 1 draws today's phantoms, byte for byte.

Random streams: image i draws its acquisition from `default_rng([seed, i, 0])` and its finding j (NIH order) from
`default_rng([seed, i, 1 + j])`, so images render independently and in any order, and an image re-rendered without
one finding keeps every other draw.
"""

from __future__ import annotations

import numpy as np

from ...models.chest_xray_labels import NIH_CHESTXRAY14_LABELS
from ..nih import BoundingBox
from .anatomy import build_anatomy, outline_mediastinum
from .canvas import Canvas, Frame
from .findings import draw_finding
from .plan import ImagePlan
from .structures import (
    draw_body,
    draw_gastric_bubble,
    draw_lungs,
    draw_markings,
    draw_nipples,
    draw_ribs,
    draw_scapulae,
    draw_spine_and_mediastinum,
)

# The average field of view: patient units to the half-width of the image, and how far the chest sits below the
# middle of the film; each film varies around both.
FIELD_SCALE = 0.93
FIELD_DROP = 0.06
# The film curve of a PA film at its nominal contrast, before the difficulty lowers it (AP films: 10 % more).
PA_CONTRAST = 0.55


def render(
    spec: ImagePlan,
    size: int,
    difficulty: float,
    seed: int,
    without: frozenset = frozenset(),
    variation: float = 1.0,
) -> tuple[np.ndarray, tuple[BoundingBox, ...]]:
    """The 8-bit image of one plan entry and the boxes of the findings drawn on it that a radiologist would box.
    `without` leaves findings out while keeping every other random draw, so the difference shows exactly what a
    finding changed."""
    rng = np.random.default_rng([seed, spec.index, 0])
    spread = (0.5 + difficulty) * variation
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
    angle = np.deg2rad((2.0 + 6.0 * difficulty) * variation * float(rng.uniform(-1.0, 1.0)))
    scale = FIELD_SCALE * (1.0 + 0.04 * spread * spec.anatomy["body_scale"])
    shift = (0.025 * spread * float(rng.standard_normal()), FIELD_DROP + 0.025 * spread * float(rng.standard_normal()))
    frame = Frame(size, scale, shift, angle)
    canvas = Canvas(frame)
    anatomy = build_anatomy(spec, rng, spread, strengths, collapse)

    draw_body(canvas, anatomy, spec)
    draw_spine_and_mediastinum(canvas, anatomy)
    mediastinum = outline_mediastinum(frame, anatomy)
    lungs = draw_lungs(canvas, anatomy, mediastinum)
    draw_ribs(canvas, anatomy, lungs)
    draw_markings(canvas, anatomy, lungs, rng)
    draw_gastric_bubble(canvas, anatomy, spec)
    if ap:
        draw_scapulae(canvas, anatomy)
    draw_nipples(canvas, anatomy, spec, difficulty)

    for name in findings:
        draw_finding(name, canvas, anatomy, streams[name], strengths[name], collapse, mediastinum)

    attenuation = canvas.tissue
    attenuation -= canvas.air
    attenuation += 0.3 * canvas.markings
    # Heel effect: the exposure falls off along the tube's anode-cathode axis.
    attenuation += np.float32(0.05 * float(rng.standard_normal())) * frame.v
    exposure = 1.45 + 0.07 * spread * float(rng.standard_normal())
    contrast = PA_CONTRAST * (1.0 + 0.25 * difficulty * variation * float(rng.random())) * (1.1 if ap else 1.0)
    attenuation -= np.float32(exposure)
    attenuation *= np.float32(-1.0 / contrast)
    image = 1.0 / (1.0 + np.exp(attenuation))
    sigma = (0.008 + 0.03 * difficulty) * (1.4 if ap else 1.0)
    image += np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)
    image *= 255.0
    image += 0.5
    pixels = np.clip(image, 0.0, 255.0).astype(np.uint8)
    return pixels, tuple(canvas.boxes)
