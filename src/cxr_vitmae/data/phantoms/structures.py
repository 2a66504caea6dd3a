"""The normal chest drawn onto a canvas as attenuation: neck, sloping shoulders, chest wall, abdomen and breasts;
clavicles; spine and trachea; the lungs' air; posterior and anterior ribs; hila and the vessels branching from them;
a gastric bubble; scapulae over the upper zones of AP films; nipple shadows, the nodule mimics."""

from __future__ import annotations

import numpy as np

from .anatomy import Anatomy, lung_distance
from .canvas import Canvas, ramp, region, ridges, smooth_noise, sphere
from .plan import ImagePlan


def draw_body(canvas: Canvas, anatomy: Anatomy, spec: ImagePlan) -> None:
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
                canvas.tissue[window] += 0.3 * sphere(du, dv, 2.0 * size)


def draw_spine_and_mediastinum(canvas: Canvas, anatomy: Anatomy) -> None:
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


def draw_lungs(canvas: Canvas, anatomy: Anatomy, mediastinum: tuple) -> np.ndarray:
    """Lung air, thinner towards the edges; the mediastinum and heart displace it. Returns the lung mask."""
    frame = canvas.frame
    mask = np.zeros_like(frame.u)
    for side in (0, 1):
        sign = -1.0 if side == 0 else 1.0
        u0, u1 = sorted((sign * (anatomy.medial[side] - 0.03), sign * (anatomy.lateral[side] + 0.03)))
        window = frame.window(u0, u1, anatomy.apex[side] - 0.03, anatomy.cp[side] + 0.03)
        if window is None:
            continue
        distance = lung_distance(frame.u[window], frame.v[window], anatomy, side)
        inside = ramp(distance, 1.5 * frame.pixel)
        canvas.air[window] += inside * (0.6 + 0.65 * np.clip(distance * np.float32(1.0 / 0.14), 0.0, 1.0))
        np.maximum(mask[window], inside, out=mask[window])
    # A little lung stays visible behind the heart.
    window, silhouette, _ = mediastinum
    canvas.air[window] *= 1.0 - 0.9 * silhouette
    canvas.air *= anatomy.air
    return mask


def draw_ribs(canvas: Canvas, anatomy: Anatomy, lungs: np.ndarray) -> None:
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


def draw_markings(canvas: Canvas, anatomy: Anatomy, lungs: np.ndarray, rng: np.random.Generator) -> None:
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
        noise = smooth_noise(rng, (n_r, n_t), (max(int(cells_t / 10), 3), cells_t))
        texture += weight * ridges(noise, sharp[0] + sharp[1] * radius)
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


def draw_gastric_bubble(canvas: Canvas, anatomy: Anatomy, spec: ImagePlan) -> None:
    if not spec.anatomy["gastric_bubble"]:
        return
    frame = canvas.frame
    cu, cv = 0.36, anatomy.dome[1] + 0.12
    window = frame.window(cu - 0.15, cu + 0.15, cv - 0.1, cv + 0.1)
    if window is None:
        return
    du, dv = frame.u[window] - np.float32(cu), frame.v[window] - np.float32(cv)
    gas = sphere(du, dv * np.float32(1.5), 0.09) * (dv < 0.015)
    canvas.tissue[window] -= 0.5 * gas


def draw_scapulae(canvas: Canvas, anatomy: Anatomy) -> None:
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


def draw_nipples(canvas: Canvas, anatomy: Anatomy, spec: ImagePlan, difficulty: float) -> None:
    """Nipple shadows: normal small round densities over the lower zones that mimic nodules."""
    if spec.anatomy["nipple_draw"] >= 0.1 + 0.3 * difficulty:
        return
    for side in (-1.0, 1.0):
        window, du, dv = region(canvas.frame, side * 0.5, anatomy.cp[0] - 0.2, 0.05, 0.05)
        if window is not None:
            canvas.tissue[window] += 0.25 * sphere(du, dv, 0.022)
