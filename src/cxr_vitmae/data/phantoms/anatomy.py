"""The geometry of one film in patient coordinates: lung outlines, domes, heart and mediastinal silhouette, hila and
ribs' spacing, from the patient's anatomy draws, the view, and the findings that change the shape (emphysema,
fibrosis, collapse, cardiomegaly).

AP films (portable, sicker patients) have a magnified heart, poorer inspiration and higher domes than PA films.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .canvas import Frame, bump, ramp
from .plan import ImagePlan


@dataclass
class Anatomy:
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


def lung_distance(u, v, anatomy: Anatomy, side: int):
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


def lung_point(anatomy: Anatomy, side: int, t: float, across: float) -> tuple[float, float]:
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


def build_anatomy(
    spec: ImagePlan, rng: np.random.Generator, spread: float, strengths: dict, collapse: tuple
) -> Anatomy:
    """The geometry of one film: the patient's anatomy draws spread by `spread`, the view, one inspiration draw from
    `rng`, and the findings that change the shape (`strengths`: finding -> k; `collapse`: (side, lobar, k) of an
    atelectasis, or empty)."""
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
    return Anatomy(
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


def outline_mediastinum(frame: Frame, anatomy: Anatomy):
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
    left = 0.1 + 0.075 * bump(v - np.float32(top - 0.3), 0.09) + 0.03 * bump(v - np.float32(top - 0.1), 0.08)
    left += np.float32(anatomy.heart_left - 0.1) * (widening * np.sqrt(root))
    right = np.float32(0.085) + np.float32(anatomy.heart_right - 0.085) * root
    mediastinum = ramp(np.minimum(u + right, left - u), 1.5 * frame.pixel)
    return window, mediastinum, mediastinum * (t > 0)
