"""Synthetic chest radiographs for the demo cohort (numpy only, no learned model).

The scene is drawn analytically on a normalised coordinate grid (``x`` to the image's right, ``y``
down, both in ``[-1, 1]``), so every image is sharp at any size and rotation/scale/shift cost no
interpolation. Brightness follows the radiograph convention: denser is brighter (bone and heart
white, aerated lung dark, air outside the body black). The image is a sum of "attenuation" layers:

body soft tissue + mediastinum + heart + spine + ribs + clavicles - lung air + findings,

then exposure (gain, gamma), a heel-effect gradient, quantum noise and a light blur.

Image-visible findings and their masks (at the image's pixel grid, True inside the lesion):

* ``nodule``: a small bright disc inside a lung field (radius and contrast vary); mask = the disc.
* ``cardiomegaly``: a heart silhouette with cardiothoracic ratio 0.54-0.66 (normal 0.36-0.46);
  mask = the heart.
* ``consolidation``: a patchy lower-zone opacity made of overlapping textured blobs, inside one lung;
  mask = the patch. In the demo cohort it is the image half of ``pneumonia``.

Nothing here depends on report-only findings (effusion, fracture): the image carries no signal for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Findings this module can draw.
IMAGE_FINDINGS = ("nodule", "cardiomegaly", "consolidation")

_NORMAL_CTR = (0.36, 0.46)
_RIB_SPACING = 0.135
_ENLARGED_CTR = (0.54, 0.66)


@dataclass(frozen=True)
class Nodule:
    """A round opacity, in patient coordinates (normalised units)."""

    cx: float
    cy: float
    radius: float
    contrast: float


@dataclass(frozen=True)
class Consolidation:
    """A patchy opacity: Gaussian blobs ``(cx, cy, sigma, weight)`` in one lung's lower zone."""

    blobs: tuple[tuple[float, float, float, float], ...]
    intensity: float
    texture_seed: int


@dataclass(frozen=True)
class Anatomy:
    """The per-study scene: body geometry, acquisition variation and findings.

    One anatomy is rendered into every view and frame of a study, so that the PA image, the lateral
    image and the frames of a multi-frame file show the same patient and the same findings.

    Attributes:
        lung_cx: Distance of each lung's centre from the midline.
        lung_cy: Vertical centre of the lungs.
        lung_ax: Horizontal semi-axis of each lung.
        lung_ay: Vertical semi-axis of each lung.
        heart_cx: Horizontal centre of the heart (positive: the image's right, the patient's left).
        heart_cy: Vertical centre of the heart.
        heart_ax: Horizontal semi-axis of the heart.
        heart_ay: Vertical semi-axis of the heart.
        cardiothoracic_ratio: Heart width over thoracic (outer lung) width.
        rib_offset: Vertical offset of the rib cage.
        rotation: In-plane rotation of the patient, radians.
        scale: Magnification.
        shift: Translation ``(dx, dy)`` of the patient in the image.
        gain: Exposure gain.
        gamma: Detector response exponent.
        noise: Standard deviation of quantum noise.
        gastric_bubble: Whether a gastric air bubble shows under the left hemidiaphragm.
        nodule: The nodule, if any.
        consolidation: The consolidation patch, if any.
    """

    lung_cx: float
    lung_cy: float
    lung_ax: float
    lung_ay: float
    heart_cx: float
    heart_cy: float
    heart_ax: float
    heart_ay: float
    cardiothoracic_ratio: float
    rib_offset: float
    rotation: float
    scale: float
    shift: tuple[float, float]
    gain: float
    gamma: float
    noise: float
    gastric_bubble: bool
    nodule: Nodule | None = None
    consolidation: Consolidation | None = None


@dataclass(frozen=True)
class RenderedView:
    """One rendered radiograph.

    Attributes:
        image: float32 ``(rows, cols)`` in ``[0, 1]``, brighter = denser.
        masks: Finding name to a bool ``(rows, cols)`` mask, for the findings present in this view.
        view: ``"PA"`` or ``"LL"`` (left lateral).
    """

    image: np.ndarray
    masks: dict[str, np.ndarray]
    view: str


# ------------------------------------------------------------------------------------------ helpers


def _soft(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """Soft indicator of ``signed_distance < 0`` (1 inside, 0 outside, a linear ramp ``2 * width`` wide)."""
    return np.clip(0.5 - signed_distance / (2.0 * width), 0.0, 1.0)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (negative inside), normalised units."""
    r = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return (r - 1.0) * min(ax, ay)


def _superellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float, p: float) -> np.ndarray:
    """Approximate signed distance to a superellipse ``|x/ax|^p + |y/ay|^p = 1`` (boxier than an ellipse)."""
    r = (np.abs((x - cx) / ax) ** p + np.abs((y - cy) / ay) ** p) ** (1.0 / p)
    return (r - 1.0) * min(ax, ay)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth zero-mean noise ``(size, size)`` of unit-ish amplitude: a coarse grid, bilinearly upsampled."""
    grid = rng.standard_normal((cells + 1, cells + 1))
    pos = np.linspace(0.0, cells, size)
    i0 = np.minimum(pos.astype(int), cells - 1)
    f = pos - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]  # (size, cells+1)
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _blur(image: np.ndarray) -> np.ndarray:
    """One pass of a separable [1, 2, 1] / 4 blur with edge replication."""
    padded = np.pad(image, 1, mode="edge")
    vertical = (padded[:-2] + 2 * padded[1:-1] + padded[2:]) / 4.0
    return (vertical[:, :-2] + 2 * vertical[:, 1:-1] + vertical[:, 2:]) / 4.0


def _grid(size: int, anatomy: Anatomy, offset: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates of every pixel centre, after the study's rotation, scale and shift."""
    axis = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    u, v = np.meshgrid(axis, axis)  # (size, size): u = column, v = row
    u = u - anatomy.shift[0] - offset[0]
    v = v - anatomy.shift[1] - offset[1]
    cos, sin = math.cos(anatomy.rotation), math.sin(anatomy.rotation)
    x = (cos * u + sin * v) / anatomy.scale
    y = (-sin * u + cos * v) / anatomy.scale
    return x, y


def _nonempty(mask: np.ndarray, x: np.ndarray, y: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """Make sure a lesion mask holds at least the pixel nearest the lesion centre."""
    if not mask.any():
        nearest = np.unravel_index(np.argmin((x - cx) ** 2 + (y - cy) ** 2), mask.shape)
        mask = mask.copy()
        mask[nearest] = True
    return mask


# ----------------------------------------------------------------------------------------- anatomy


def _lung_field(x: np.ndarray, y: np.ndarray, a: Anatomy, side: int) -> np.ndarray:
    """Signed distance to one lung (side -1: image left = patient's right), diaphragm dome included."""
    cx = side * a.lung_cx
    body = _ellipse(x, y, cx, a.lung_cy, a.lung_ax, a.lung_ay)
    # Diaphragm: a dome, highest near the lung's centre, lowest at the lateral costophrenic angle.
    t = np.clip((x - cx) / a.lung_ax, -1.2, 1.2)
    lateral = np.clip(side * t, 0.0, None)
    dome = a.lung_cy + 0.62 * a.lung_ay + 0.10 * t**2 + 0.10 * lateral**2 - (0.04 if side < 0 else 0.0)
    return np.maximum(body, y - dome)


def _in_lung(a: Anatomy, px: float, py: float, margin: float) -> bool:
    """Whether a point lies inside a lung field and outside the heart, ``margin`` away from both edges."""
    x, y = np.array([px]), np.array([py])
    inside = any(_lung_field(x, y, a, side)[0] < -margin for side in (-1, 1))
    in_heart = _ellipse(x, y, a.heart_cx, a.heart_cy, a.heart_ax + margin, a.heart_ay + margin)[0] < 0
    in_mediastinum = _mediastinum(x, y)[0] < margin
    return bool(inside and not in_heart and not in_mediastinum)


def _mediastinum(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance to the mediastinum: a midline band widening downwards, from the neck to the heart."""
    return np.maximum(np.abs(x - 0.01) - 0.10 - 0.05 * np.clip(y + 0.2, 0, None), -0.8 - y)


def sample_anatomy(rng: np.random.Generator, *, nodule: bool, cardiomegaly: bool, consolidation: bool) -> Anatomy:
    """Draw one study's scene.

    Args:
        rng: Random generator (the only source of randomness).
        nodule: Draw a nodule.
        cardiomegaly: Enlarge the heart (cardiothoracic ratio 0.54-0.66 instead of 0.36-0.46).
        consolidation: Draw a patchy lower-zone consolidation.

    Returns:
        The anatomy, findings included.
    """
    lung_cx = float(rng.uniform(0.33, 0.39))
    lung_ax = float(rng.uniform(0.26, 0.31))
    lung_cy = float(rng.uniform(-0.12, -0.04))
    lung_ay = float(rng.uniform(0.52, 0.60))
    thorax_width = 2.0 * (lung_cx + lung_ax)
    ctr = float(rng.uniform(*(_ENLARGED_CTR if cardiomegaly else _NORMAL_CTR)))
    heart_ax = ctr * thorax_width / 2.0
    heart_ay = float(rng.uniform(0.19, 0.23)) + 0.35 * (heart_ax - 0.27)
    anatomy = Anatomy(
        lung_cx=lung_cx,
        lung_cy=lung_cy,
        lung_ax=lung_ax,
        lung_ay=lung_ay,
        heart_cx=float(rng.uniform(0.05, 0.10)) + 0.25 * (heart_ax - 0.27),
        heart_cy=lung_cy + 0.62 * lung_ay - heart_ay * float(rng.uniform(0.55, 0.75)),
        heart_ax=heart_ax,
        heart_ay=heart_ay,
        cardiothoracic_ratio=ctr,
        rib_offset=float(rng.uniform(-0.03, 0.03)),
        rotation=float(np.deg2rad(rng.uniform(-5.0, 5.0))),
        scale=float(rng.uniform(0.92, 1.05)),
        shift=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05))),
        gain=float(rng.uniform(0.85, 1.1)),
        gamma=float(rng.uniform(0.85, 1.15)),
        noise=float(rng.uniform(0.010, 0.025)),
        gastric_bubble=bool(rng.random() < 0.7),
    )
    found_nodule = None
    if nodule:
        radius = float(rng.uniform(0.05, 0.09))
        for _ in range(200):  # rejection sampling; the lungs are large, a few tries suffice
            side = int(rng.choice((-1, 1)))
            px = side * lung_cx + float(rng.uniform(-0.8, 0.8)) * lung_ax
            py = lung_cy + float(rng.uniform(-0.75, 0.5)) * lung_ay
            if _in_lung(anatomy, px, py, radius + 0.03):
                break
        found_nodule = Nodule(px, py, radius, float(rng.uniform(0.10, 0.22)))
    found_patch = None
    if consolidation:
        side = int(rng.choice((-1, 1)))
        cx = side * (lung_cx + float(rng.uniform(-0.3, 0.35)) * lung_ax)
        cy = lung_cy + float(rng.uniform(0.2, 0.4)) * lung_ay
        n_blobs = int(rng.integers(3, 7))
        blobs = tuple(
            (
                cx + float(rng.normal(0, 0.07)),
                cy + float(rng.normal(0, 0.05)),
                float(rng.uniform(0.05, 0.08)),
                float(rng.uniform(0.6, 1.0)),
            )
            for _ in range(n_blobs)
        )
        found_patch = Consolidation(blobs, float(rng.uniform(0.22, 0.32)), int(rng.integers(0, 2**31)))
    return Anatomy(**{**anatomy.__dict__, "nodule": found_nodule, "consolidation": found_patch})


# ------------------------------------------------------------------------------------------ render


def _finish(att: np.ndarray, a: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Exposure, heel effect, noise and blur: attenuation -> display image in [0, 1]."""
    size = att.shape[0]
    heel = 0.04 * (np.arange(size) / size - 0.5)[:, None]
    image = a.gain * np.clip(att, 0.0, None) ** a.gamma + heel
    image = image + a.noise * rng.standard_normal(att.shape)
    return np.clip(_blur(image), 0.0, 1.0).astype(np.float32)


def _patch_field(x: np.ndarray, y: np.ndarray, patch: Consolidation) -> np.ndarray:
    """The consolidation's smooth density, normalised to a peak of 1, before texture."""
    field = np.zeros_like(x)
    for bx, by, sigma, weight in patch.blobs:
        field += weight * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * sigma**2))
    return field / max(float(field.max()), 1e-6)


def render_frontal(
    anatomy: Anatomy, size: int, rng: np.random.Generator, *, offset: tuple[float, float] = (0.0, 0.0)
) -> RenderedView:
    """Render a PA chest radiograph.

    Args:
        anatomy: The study's scene (see :func:`sample_anatomy`).
        size: Side of the square image, pixels.
        rng: Random generator for the noise of this image.
        offset: Extra translation (normalised units), e.g. for the frames of a multi-frame file.

    Returns:
        The image and a mask per finding present.
    """
    a = anatomy
    x, y = _grid(size, a, offset)
    edge = 2.0 / size  # one pixel, normalised units

    body = _soft(_superellipse(x, y, 0.0, 0.3, 0.92, 1.2, 3.0), edge)
    neck = _soft(np.maximum(np.abs(x) - 0.2, -0.75 - y), edge)
    body = np.maximum(body, neck)
    lungs = np.maximum(*(_soft(_lung_field(x, y, a, s), 1.5 * edge) for s in (-1, 1)))
    heart_sd = _ellipse(x, y, a.heart_cx, a.heart_cy, a.heart_ax, a.heart_ay)
    heart = _soft(heart_sd, 1.5 * edge)
    mediastinum = _soft(_mediastinum(x, y), edge)
    spine = _soft(np.abs(x) - 0.065, edge) * body * (0.8 + 0.2 * np.cos(2 * np.pi * (y - a.rib_offset) / 0.13))

    ribs = np.zeros_like(x)
    lateral_limit = a.lung_cx + a.lung_ax + 0.06
    ax_abs = np.abs(x)
    t = np.clip((ax_abs - 0.06) / (lateral_limit - 0.06), 0.0, 1.0)
    lowest = a.lung_cy + a.lung_ay + 0.08
    within = _soft(ax_abs - lateral_limit, edge) * (ax_abs > 0.05) * _soft(y - lowest, 4 * edge)
    # Ten posterior ribs (curving down laterally) and fainter anterior ribs (curving up), evenly
    # spaced: the distance to the nearest rib is the distance to the nearest integer rib index.
    for curve, thickness, weight, lateral_only in (
        (0.30 * t**2 - 0.06 * t, 0.022 + 0.012 * t, 0.11, False),
        (0.22 - 0.28 * t**1.5, 0.018, 0.05, True),
    ):
        z = (y - curve + 0.78 - a.rib_offset) / _RIB_SPACING
        distance = np.abs(z - np.clip(np.rint(z), 0, 9)) * _RIB_SPACING
        ribs += weight * _soft(distance - thickness, edge) * within * ((t > 0.35) if lateral_only else 1.0)
    clavicles = np.zeros_like(x)
    for side in (-1, 1):
        s = np.clip(side * x, 0.0, None)
        line = -0.64 - 0.2 * (s - 0.08) + 0.25 * (s - 0.35) ** 2
        clavicles += _soft(np.abs(y - line) - 0.03, edge) * ((s > 0.07) & (s < 0.66))

    lung_air = lungs * (1.0 - 0.8 * heart) * (1.0 - 0.9 * mediastinum)
    texture = 0.03 * _smooth_noise(rng, size, 10) + 0.015 * _smooth_noise(rng, size, 24)
    att = (
        0.03
        + 0.44 * body
        + 0.12 * mediastinum * body
        + 0.14 * heart
        + 0.08 * spine
        + ribs * body
        + 0.16 * clavicles * body
        - (0.30 - texture) * lung_air
    )
    if a.gastric_bubble:
        dome_y = a.lung_cy + 0.62 * a.lung_ay + 0.13
        att -= 0.14 * _soft(_ellipse(x, y, a.lung_cx - 0.02, dome_y, 0.09, 0.05), edge)

    masks: dict[str, np.ndarray] = {}
    if a.nodule is not None:
        n = a.nodule
        d = np.sqrt((x - n.cx) ** 2 + (y - n.cy) ** 2)
        att += n.contrast * _soft(d - n.radius, edge)
        masks["nodule"] = _nonempty(d <= n.radius, x, y, n.cx, n.cy)
    if a.cardiothoracic_ratio > 0.5:
        masks["cardiomegaly"] = heart_sd <= 0
    if a.consolidation is not None:
        patch = _patch_field(x, y, a.consolidation)
        texture_rng = np.random.default_rng(a.consolidation.texture_seed)
        mottle = np.clip(0.8 + 0.3 * _smooth_noise(texture_rng, size, 14), 0.3, 1.1)
        att += a.consolidation.intensity * np.clip(patch * 1.4, 0.0, 1.0) * mottle * lungs
        bx, by = a.consolidation.blobs[0][:2]
        masks["consolidation"] = _nonempty((patch > 0.35) & (lungs > 0.5), x, y, bx, by)
    return RenderedView(_finish(att, a, rng), masks, "PA")


def render_lateral(anatomy: Anatomy, size: int, rng: np.random.Generator) -> RenderedView:
    """Render a left lateral chest radiograph of the same study (anterior to the image's left).

    The same findings are drawn (nodule at the same height, heart size by the same ratio, the patch
    in the posterior lower zone); masks are returned for this view's pixel grid too.

    Args:
        anatomy: The study's scene.
        size: Side of the square image, pixels.
        rng: Random generator for the noise of this image.

    Returns:
        The image and a mask per finding present.
    """
    a = anatomy
    x, y = _grid(size, a, (0.0, 0.0))
    edge = 2.0 / size
    body = _soft(_ellipse(x, y, 0.0, 0.2, 0.72, 1.12), edge)
    lung_cy, lung_ay = a.lung_cy, a.lung_ay
    lung_sd = _ellipse(x, y, 0.02, lung_cy, 0.52, lung_ay)
    dome = lung_cy + 0.6 * lung_ay + 0.12 * ((x - 0.02) / 0.52) ** 2
    lungs = _soft(np.maximum(lung_sd, y - dome), 1.5 * edge)
    heart_ax = a.heart_ax * 0.8
    heart_sd = _ellipse(x, y, -0.22 - 0.3 * (heart_ax - 0.22), a.heart_cy + 0.02, heart_ax, a.heart_ay)
    heart = _soft(heart_sd, 1.5 * edge)
    vertebrae = _soft(np.abs(x - 0.5) - 0.09, edge) * (0.75 + 0.25 * np.cos(2 * np.pi * (y - a.rib_offset) / 0.13))
    sternum = _soft(np.abs(x + 0.55 + 0.05 * y) - 0.025, edge) * (y > -0.7) * (y < 0.2)
    ribs = np.zeros_like(x)
    for i in range(9):
        line = -0.75 + 0.14 * i + a.rib_offset + 0.18 * (x - 0.5)
        ribs += 0.05 * _soft(np.abs(y - line) - 0.02, edge) * (x > -0.4) * (x < 0.55)
    texture = 0.03 * _smooth_noise(rng, size, 10)
    att = (
        0.03
        + 0.46 * body
        + 0.12 * heart
        + 0.16 * vertebrae * body
        + 0.10 * sternum
        + ribs * body
        - (0.26 - texture) * lungs * (1.0 - 0.7 * heart)
    )
    masks: dict[str, np.ndarray] = {}
    if a.nodule is not None:
        n = a.nodule
        nx = -0.25 + 0.5 * (n.cx + 1.0) / 2.0 + 0.1 * n.cy  # some anterior-posterior position
        d = np.sqrt((x - nx) ** 2 + (y - n.cy) ** 2)
        att += n.contrast * _soft(d - n.radius, edge)
        masks["nodule"] = _nonempty(d <= n.radius, x, y, nx, n.cy)
    if a.cardiothoracic_ratio > 0.5:
        masks["cardiomegaly"] = heart_sd <= 0
    if a.consolidation is not None:
        c = a.consolidation
        moved = tuple((0.25 + (bx - c.blobs[0][0]), by, s, w) for bx, by, s, w in c.blobs)
        patch = _patch_field(x, y, Consolidation(moved, c.intensity, c.texture_seed))
        mottle = np.clip(0.65 + 0.35 * _smooth_noise(np.random.default_rng(c.texture_seed), size, 14), 0.2, 1.0)
        att += c.intensity * patch * mottle * lungs
        masks["consolidation"] = _nonempty((patch > 0.35) & (lungs > 0.5), x, y, moved[0][0], moved[0][1])
    return RenderedView(_finish(att, a, rng), masks, "LL")
