"""The 14 NIH findings drawn onto a canvas where a radiologist would look for them, each scaled by its strength k in
(0, 1] (set by the difficulty) and boxed where NIH would box it."""

from __future__ import annotations

import numpy as np

from .anatomy import Anatomy, lung_distance, lung_point
from .canvas import Canvas, ramp, region, ridges, smooth_noise, sphere

# The radius range (patient units) of a Nodule; about 0.8 to 2 % of the image width.
NODULE_RADII = (0.018, 0.042)


def draw_round(canvas: Canvas, anatomy: Anatomy, rng, k: float, label: str, radii: tuple, lobes: int) -> None:
    """Nodule (small) and Mass (large, often lobulated): round soft-tissue opacities in a lung."""
    side = int(rng.integers(2))
    cu, cv = lung_point(anatomy, side, float(rng.uniform(0.15, 0.8)), float(rng.uniform(0.3, 0.8)))
    radius = float(rng.uniform(*radii)) * (0.75 + 0.25 * k)
    window, du, dv = region(canvas.frame, cu, cv, 2.0 * radius, 2.0 * radius)
    if window is None:
        return
    density = sphere(du, dv, radius)
    for _ in range(lobes - 1):
        offset = rng.normal(0.0, 0.45 * radius, 2)
        np.maximum(density, sphere(du - np.float32(offset[0]), dv - np.float32(offset[1]), 0.7 * radius), out=density)
    change = density * np.float32((0.4 + 0.25 * float(rng.random())) * k)
    canvas.tissue[window] += change
    canvas.box(label, change, window)


def _replace_air(canvas: Canvas, window: tuple[slice, slice], opacity: np.ndarray, label: str) -> None:
    """Fluid or collapsed lung where `opacity` (0..1) says: that share of the lung air and of the vessel markings
    goes, and the box is drawn around the air that went."""
    air = canvas.air[window]
    change = air * opacity
    canvas.air[window] = air - change
    canvas.markings[window] *= 1.0 - opacity
    canvas.box(label, change, window)


_AIRSPACE = {
    # density range, radius range, noise cells across the patch, noise offset (more = more confluent)
    "Infiltration": ((0.3, 0.5), (0.1, 0.2), 7, 0.0),
    "Pneumonia": ((0.5, 0.75), (0.13, 0.22), 5, 0.6),
    "Consolidation": ((0.75, 0.92), (0.1, 0.17), 4, 1.3),
}


def _draw_airspace(canvas: Canvas, anatomy: Anatomy, rng, k: float, label: str) -> None:
    """Infiltration (faint, patchy, sometimes multifocal), Pneumonia (denser, more confluent) and Consolidation
    (dense, homogeneous, with air bronchograms): lung air replaced by fluid under a soft envelope."""
    frame = canvas.frame
    density_range, radii, cells, cover = _AIRSPACE[label]
    count = int(rng.integers(1, 3)) if label == "Infiltration" else 1
    for _ in range(count):
        side = int(rng.integers(2))
        cu, cv = lung_point(anatomy, side, float(rng.uniform(0.35, 0.92)), float(rng.uniform(0.3, 0.75)))
        ru = float(rng.uniform(*radii))
        rv = ru * float(rng.uniform(0.8, 1.3))
        window, du, dv = region(frame, cu, cv, ru, rv)
        if window is None:
            continue
        envelope = np.clip(1.0 - (du * np.float32(1.0 / ru)) ** 2 - (dv * np.float32(1.0 / rv)) ** 2, 0.0, 1.0)
        noise = smooth_noise(rng, du.shape, (cells, cells)) + 0.25 * smooth_noise(rng, du.shape, (3 * cells, 3 * cells))
        opacity = np.clip((noise + cover) * 0.6 + 0.2, 0.0, 1.0) * envelope
        if label == "Consolidation":
            # air bronchograms: branching lucent tubes, noise stretched along the bronchi's mostly vertical course
            opacity *= 1.0 - 0.5 * ridges(smooth_noise(rng, du.shape, (2, 6)), 4.0)
        opacity *= np.float32(float(rng.uniform(*density_range)) * k)
        _replace_air(canvas, window, opacity, label)


def _draw_effusion(canvas: Canvas, anatomy: Anatomy, rng, k: float) -> None:
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
        _replace_air(canvas, window, fluid, "Effusion")


def _draw_pneumothorax(canvas: Canvas, anatomy: Anatomy, rng, k: float) -> None:
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
    lung = ramp(lung_distance(u, v, anatomy, side), 1.5 * frame.pixel)
    collapsed = lung_distance(su, sv, anatomy, side) * np.float32(1.0 - shrink)
    space = lung * ramp(-collapsed, 1.5 * frame.pixel)
    line = np.clip(1.0 - np.abs(collapsed) * np.float32(1.0 / (1.2 * frame.pixel + 0.002)), 0.0, 1.0) * lung
    canvas.markings[window] *= 1.0 - space
    canvas.air[window] += space * np.float32(0.4 * k)
    canvas.tissue[window] += np.float32(0.25 * k) * line
    canvas.box("Pneumothorax", np.maximum(space, line), window, fraction=0.5)


def _draw_atelectasis(canvas: Canvas, anatomy: Anatomy, rng, k: float, side: int, lobar: bool) -> None:
    """Plate-like (a thin band at a base) or lobar collapse (a wedge fanning out from the hilum); the volume loss
    (a raised hemidiaphragm) is applied to the anatomy."""
    frame = canvas.frame
    if not lobar:
        cu, cv = lung_point(anatomy, side, float(rng.uniform(0.68, 0.85)), float(rng.uniform(0.35, 0.6)))
        half = float(rng.uniform(0.08, 0.16))
        thickness = float(rng.uniform(0.012, 0.028)) * (0.7 + 0.3 * k)
        tilt = float(rng.uniform(-0.3, 0.3))
        window, du, dv = region(frame, cu, cv, half + 0.05, half * 0.35 + 0.05)
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
        window, du, dv = region(frame, hu, hv, reach, reach)
        if window is None:
            return
        du = du * np.float32(sign)
        radius = np.sqrt(du * du + dv * dv)
        angle = np.abs((np.arctan2(dv, du) - np.float32(pointing) + np.float32(np.pi)) % np.float32(2 * np.pi) - np.pi)
        wedge = np.clip((spread - angle) * 6.0, 0.0, 1.0) * np.clip((reach - radius) * 10.0, 0.0, 1.0)
        opacity = wedge * np.float32(0.8 * k)
    _replace_air(canvas, window, opacity, "Atelectasis")


def _box_cardiomegaly(canvas: Canvas, mediastinum: tuple, anatomy: Anatomy) -> None:
    """The enlarged heart is drawn with the anatomy; its box is the silhouette above the diaphragm."""
    window, _, heart = mediastinum
    visible = heart * (canvas.frame.v[window] < np.float32(max(anatomy.dome)))
    canvas.box("Cardiomegaly", visible, window, fraction=0.5)


def _draw_edema(canvas: Canvas, anatomy: Anatomy, rng, k: float) -> None:
    """Bilateral perihilar haze ("bat wing") with Kerley B lines at the lateral bases."""
    frame = canvas.frame
    du = np.abs(frame.u - np.float32(0.02)) - np.float32(0.22)
    dv = frame.v - np.float32(anatomy.hilum_v + 0.05)
    haze = np.exp(-(du * du) * np.float32(1.0 / 0.05) - (dv * dv) * np.float32(1.0 / 0.09))
    haze *= 0.75 + 0.25 * smooth_noise(rng, du.shape, (8, 8))
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


def _draw_fibrosis(canvas: Canvas, anatomy: Anatomy, rng, k: float) -> None:
    """Coarse reticular lines in both lungs, basal and peripheral, with some volume loss (applied to the anatomy)."""
    frame = canvas.frame
    cells = max(int(34 * frame.scale), 6)
    net = ridges(smooth_noise(rng, (frame.size, frame.size), (cells, cells)), 4.0)
    weight = np.clip((np.abs(frame.u) - 0.3) * 3.0 + 0.3, 0.0, 1.0) * np.clip((frame.v + 0.1) * 2.0, 0.0, 1.0)
    canvas.tissue += np.float32(0.3 * k) * net * weight * np.clip(canvas.air * 2.0, 0.0, 1.0)


def _draw_pleural_thickening(canvas: Canvas, anatomy: Anatomy, rng, k: float) -> None:
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
        distance = lung_distance(u, v, anatomy, side)
        thickness = float(rng.uniform(0.03, 0.06)) * (0.4 + 0.6 * k) * (1.0 + 0.4 * smooth_noise(rng, u.shape, (5, 5)))
        band = ramp(thickness - distance, 1.5 * frame.pixel) * ramp(distance + frame.pixel, frame.pixel)
        extent = np.clip((v - v0) * 8.0, 0.0, 1.0) * np.clip((v1 - v) * 8.0, 0.0, 1.0)
        opacity = band * extent * np.float32(0.3 + 0.7 * k)
        canvas.air[window] -= canvas.air[window] * opacity
        canvas.tissue[window] += 0.1 * opacity


def _draw_hernia(canvas: Canvas, anatomy: Anatomy, rng, k: float) -> None:
    """Hiatus hernia: a gas bubble behind the heart above the diaphragm, often with an air-fluid level."""
    frame = canvas.frame
    cu = float(rng.uniform(0.02, 0.12))
    cv = anatomy.dome[1] - float(rng.uniform(0.12, 0.2))
    ru, rv = float(rng.uniform(0.09, 0.14)) * (0.7 + 0.3 * k), float(rng.uniform(0.07, 0.1)) * (0.7 + 0.3 * k)
    window, du, dv = region(frame, cu, cv, ru * 1.3, rv * 1.3)
    if window is None:
        return
    r = np.sqrt((du * np.float32(1.0 / ru)) ** 2 + (dv * np.float32(1.0 / rv)) ** 2)
    gas = np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0))
    if rng.random() < 0.6:
        gas *= np.clip((np.float32(rv * 0.35) - dv) * np.float32(1.0 / (2 * frame.pixel)), 0.0, 1.0)
    wall = np.clip(1.0 - np.abs(r - 1.05) * 12.0, 0.0, 1.0)
    canvas.tissue[window] += (0.08 * wall - 0.55 * gas) * np.float32(k)


def draw_finding(
    name: str, canvas: Canvas, anatomy: Anatomy, stream: np.random.Generator, k: float, collapse: tuple, mediastinum
) -> None:
    """Draw the NIH finding `name` at strength `k` from its own random stream. Atelectasis draws the collapse
    `build_anatomy` applied (side, lobar, k); Cardiomegaly, already drawn with the anatomy, only boxes the silhouette
    `outline_mediastinum` returned; Emphysema is drawn by the anatomy alone."""
    if name == "Nodule":
        for _ in range(1 + int(stream.random() < 0.2) + int(stream.random() < 0.05)):
            draw_round(canvas, anatomy, stream, k, name, NODULE_RADII, 1)
    elif name == "Mass":
        draw_round(canvas, anatomy, stream, k, name, (0.065, 0.13), int(stream.integers(1, 4)))
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
