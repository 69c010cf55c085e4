"""Procedural "seasons" and "weather" landscape datasets for CPU demos and tests.

The real Seasons and Weather datasets cannot be downloaded on development or
CI machines, so this module draws small stand-ins with numpy and PIL only.

Every image is a *layout* (horizon, mountain ridges, meadow, maybe a lake,
trees, sun, clouds) drawn from a seeded RNG, rendered with a *domain look*
(palette, snow, haze, rain, ...). Layouts are resolution independent: all
geometry lives in [0, 1] coordinates, so one layout renders at any size and in
any domain. Each image also draws its own *style* within its domain (light,
colour temperature, vegetation hue, sky palette, dusk), so a domain holds
many appearances for a multi-modal model to learn. The domains of a dataset
differ in colour statistics while the structure of a layout carries over,
which is what a translation model has to learn. Within a dataset every image has its own layout seed, so the domains
are unpaired; render_scene gives paired renderings for structure checks.

Output layout read by the training code:
    OUT/train/<domain>/<NNNN>.png, OUT/val/<domain>/<NNNN>.png, OUT/synthetic.json

Command line:
    python -m core.data.synthetic seasons --out data/synthetic-seasons [--num_train N]
        [--num_val M] [--img_size S] [--seed K] [--overwrite]
"""
import argparse
import colorsys
import json
import os
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ['DATASETS', 'make_dataset', 'render_scene', 'layout_seed']

# Domain names are the folder names; the training code numbers domains by
# sorted folder name, so they are listed sorted to match those ids.
DATASETS = {
    'seasons': ['autumn', 'spring', 'summer', 'winter'],
    'weather': ['cloudy', 'foggy', 'rainy', 'snowy', 'sunny'],
}

MARKER = 'synthetic.json'
# The marker's name of this renderer: a format identifier that datasets on disk carry, so it stays
# as first written (the module was core/synthetic.py then) and datasets rendered before still match.
GENERATOR = 'core.synthetic'
# Bump when the renderer changes, so datasets drawn by an older renderer are
# not silently reused as if they matched.
VERSION = 2
MIN_SIZE, MAX_SIZE = 16, 512
SPLITS = ('train', 'val')
# Index bits of a layout seed (see layout_seed): up to 2**26 images per folder.
_INDEX_BITS = 26

# Independent random streams derived from one layout seed.
_STREAM_LAYOUT = 0      # geometry: shared by every domain rendering of a layout
_STREAM_APPEARANCE = 1  # per-domain jitter, rain and snow: differs by domain
_STREAM_STYLE = 2       # per-image style within a domain: light, palette, time of day


# ---------------------------------------------------------------------------
# Domain looks: colours are 0-255 RGB, everything else is a plain number.
# ---------------------------------------------------------------------------

_BASE_LOOK = {
    'sky_top': (70, 130, 210), 'sky_horizon': (170, 205, 235),
    'sun': 1.0, 'sun_colour': (255, 250, 225),
    'clouds': (1, 3), 'cloud_colour': (250, 250, 252), 'cloud_shade': (205, 210, 222),
    'cloud_scale': 1.0, 'cloud_alpha': 0.95,
    'far_ridge': (120, 140, 170), 'near_ridge': (80, 115, 85), 'snowcap': 0.0,
    'snow_colour': (240, 243, 248),
    'ground_far': (120, 170, 80), 'ground_near': (60, 120, 40), 'ground_texture': 0.25,
    'water': (50, 100, 150), 'water_reflect': 0.4,
    'crowns': ((40, 110, 40), (60, 130, 45)), 'cone': (30, 80, 40), 'trunk': (90, 65, 45),
    'crown_snow': 0.0, 'blossom': 0.0,
    'haze_colour': None, 'haze': 0.35, 'haze_falloff': 2.0,
    'rain': 0, 'snowfall': 0,
    'saturation': 1.0, 'contrast': 1.0, 'brightness': 1.0, 'jitter': 0.05,
    # Within-domain style (see _vary_look): ranges of the per-image draws.
    'hue_range': 14.0,      # degrees: vegetation hue shifted by up to this much either way
    'dusk': 0.55,           # at most this much of the dusk sky palette blended into the sky
    'tint': 0.10,           # warm/cool colour temperature of the light, either way
    'light': 0.12,          # brightness of the light, either way (relative)
    'sky_variants': (),     # alternative (sky_top, sky_horizon) pairs, one picked per image (or the look's own)
}

# The colours a style varies: vegetation hues rotate, skies blend toward dusk.
_VEGETATION = ('ground_far', 'ground_near', 'near_ridge', 'crowns', 'cone')
_DUSK = {'sky_top': (70, 60, 125), 'sky_horizon': (250, 160, 105), 'sun_colour': (255, 190, 120)}

_LOOKS = {
    'seasons': {
        'spring': {
            'sky_top': (115, 170, 230), 'sky_horizon': (200, 225, 242), 'clouds': (2, 4),
            'far_ridge': (150, 170, 200), 'near_ridge': (110, 160, 100), 'snowcap': 0.12,
            'ground_far': (175, 215, 115), 'ground_near': (125, 190, 75),
            'crowns': ((150, 205, 90), (170, 215, 110), (240, 185, 205)), 'cone': (70, 130, 65),
            'blossom': 1.0, 'water': (90, 150, 200), 'hue_range': 12.0,
            'sky_variants': (((150, 185, 235), (235, 230, 245)), ((100, 160, 225), (205, 235, 235))),
        },
        'summer': {
            'sky_top': (25, 95, 215), 'sky_horizon': (115, 175, 238), 'clouds': (0, 2),
            'far_ridge': (95, 120, 165), 'near_ridge': (45, 95, 50),
            'ground_far': (65, 145, 35), 'ground_near': (30, 100, 20),
            'crowns': ((25, 95, 25), (40, 115, 30)), 'cone': (20, 70, 30),
            'water': (30, 80, 150), 'saturation': 1.15, 'contrast': 1.1, 'hue_range': 16.0,
            'sky_variants': (((10, 70, 190), (90, 150, 235)), ((50, 130, 230), (175, 215, 245))),
        },
        'autumn': {
            'sky_top': (95, 140, 195), 'sky_horizon': (230, 210, 170), 'clouds': (1, 4),
            'sun': 0.8, 'sun_colour': (255, 215, 150),
            'far_ridge': (165, 140, 145), 'near_ridge': (155, 95, 50),
            'ground_far': (205, 170, 80), 'ground_near': (165, 110, 45),
            'crowns': ((220, 100, 30), (190, 50, 30), (230, 165, 40), (150, 80, 40)),
            'cone': (75, 85, 40), 'water': (70, 90, 110), 'hue_range': 18.0,
            'sky_variants': (((120, 125, 140), (200, 190, 175)), ((70, 130, 210), (240, 205, 150))),
        },
        'winter': {
            'sky_top': (145, 160, 182), 'sky_horizon': (205, 212, 222), 'clouds': (2, 5),
            'sun': 0.35, 'sun_colour': (245, 245, 240), 'cloud_colour': (230, 232, 236),
            'cloud_shade': (185, 190, 200),
            'far_ridge': (165, 175, 192), 'near_ridge': (110, 115, 125), 'snowcap': 0.55,
            'ground_far': (222, 228, 238), 'ground_near': (240, 243, 248), 'ground_texture': 0.08,
            'crowns': ((125, 110, 100), (105, 95, 90)), 'cone': (45, 65, 55), 'trunk': (80, 70, 65),
            'crown_snow': 0.55, 'water': (200, 215, 232), 'water_reflect': 0.1,
            'saturation': 0.8, 'hue_range': 10.0, 'tint': 0.14,
            'sky_variants': (((95, 140, 210), (200, 220, 240)), ((150, 145, 165), (225, 205, 210))),
        },
    },
    'weather': {
        'sunny': {
            'sky_top': (30, 105, 225), 'sky_horizon': (135, 192, 242), 'clouds': (0, 2),
            'ground_far': (110, 175, 60), 'ground_near': (55, 125, 30),
            'saturation': 1.2, 'contrast': 1.2, 'haze': 0.25,
        },
        'cloudy': {
            'sky_top': (126, 134, 150), 'sky_horizon': (178, 183, 194), 'sun': 0.0,
            'clouds': (6, 8), 'cloud_scale': 1.4, 'cloud_colour': (212, 214, 220),
            'cloud_shade': (150, 154, 165),
            'far_ridge': (135, 145, 160), 'near_ridge': (95, 115, 95),
            'ground_far': (125, 150, 95), 'ground_near': (80, 110, 60),
            'saturation': 0.55, 'contrast': 0.85, 'dusk': 0.2, 'light': 0.07, 'tint': 0.05,
        },
        'rainy': {
            'sky_top': (70, 75, 86), 'sky_horizon': (118, 122, 130), 'sun': 0.0,
            'clouds': (7, 8), 'cloud_scale': 1.5, 'cloud_colour': (105, 108, 116),
            'cloud_shade': (70, 73, 82),
            'far_ridge': (90, 96, 108), 'near_ridge': (55, 70, 58),
            'ground_far': (70, 95, 55), 'ground_near': (40, 62, 32), 'water': (55, 65, 75),
            'crowns': ((35, 70, 35), (45, 80, 40)), 'cone': (25, 50, 30),
            'haze_colour': (110, 114, 122), 'haze': 0.5,
            'rain': 200, 'saturation': 0.6, 'contrast': 0.9, 'dusk': 0.15, 'light': 0.08,
        },
        'foggy': {
            'sky_top': (208, 210, 204), 'sky_horizon': (218, 219, 212), 'sun': 0.15,
            'sun_colour': (235, 235, 225), 'clouds': (0, 1),
            'haze_colour': (214, 215, 208), 'haze': 0.9, 'haze_falloff': 4.0,
            'saturation': 0.5, 'contrast': 0.8, 'dusk': 0.15, 'tint': 0.05, 'light': 0.07,
        },
        'snowy': {
            'sky_top': (150, 156, 170), 'sky_horizon': (196, 200, 210), 'sun': 0.0,
            'clouds': (4, 7), 'cloud_colour': (205, 208, 216), 'cloud_shade': (165, 170, 182),
            'far_ridge': (175, 182, 198), 'near_ridge': (130, 135, 148), 'snowcap': 0.75,
            'ground_far': (225, 230, 240), 'ground_near': (243, 246, 252), 'ground_texture': 0.06,
            'crowns': ((90, 100, 95), (110, 105, 100)), 'cone': (40, 60, 55),
            'crown_snow': 0.7, 'water': (195, 210, 228), 'water_reflect': 0.1,
            'haze_colour': (200, 204, 214), 'haze': 0.5, 'snowfall': 200, 'saturation': 0.7,
        },
    },
}


def _look(dataset, domain):
    """The full parameter set of a domain: the base look with its overrides."""
    look = dict(_BASE_LOOK)
    look.update(_LOOKS[dataset][domain])
    return look


def _rotate_hue(colour, degrees):
    """A 0-255 RGB colour with its hue turned by `degrees` (lightness and saturation kept)."""
    h, l, sat = colorsys.rgb_to_hls(*(c / 255.0 for c in colour))
    r, g, b = colorsys.hls_to_rgb((h + degrees / 360.0) % 1.0, l, sat)
    return tuple(int(round(255 * c)) for c in (r, g, b))


def _vary_look(look, rng):
    """One image's style within its domain: the domain look with its own light, palette and sky.

    Drawn per image, so that a domain holds many styles for a model to learn
    (StarGAN v2's diversity); the ranges are per domain and small enough that
    the domains stay apart. Adds 'tint' and 'light' as the drawn values.
    """
    look = dict(look)
    turn = rng.uniform(-1, 1) * look['hue_range']
    for key in _VEGETATION:
        value = look[key]
        look[key] = (tuple(_rotate_hue(c, turn) for c in value) if isinstance(value[0], tuple)
                     else _rotate_hue(value, turn))
    variants = look['sky_variants']
    pick = int(rng.integers(len(variants) + 1))
    if pick < len(variants):
        look['sky_top'], look['sky_horizon'] = variants[pick]
    dusk = rng.uniform(0, 1) ** 2 * look['dusk']
    for key, colour in _DUSK.items():
        look[key] = tuple((1 - dusk) * a + dusk * b for a, b in zip(look[key], colour))
    look['tint'] = rng.uniform(-1, 1) * look['tint'] + 0.5 * dusk * look['tint']
    look['light'] = 1.0 + rng.uniform(-1, 1) * look['light'] - 0.3 * dusk * look['light']
    return look


# ---------------------------------------------------------------------------
# Layouts: resolution-independent geometry drawn from a seeded RNG.
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Ridge:
    """A mountain ridge: profile y(x) = base - amp * shape(x), shape in [0, 1]."""
    base: float
    amp: float
    freqs: np.ndarray
    phases: np.ndarray
    weights: np.ndarray
    ridged: np.ndarray      # per octave: sharp-peaked (1 - |sin|) instead of sin
    distance: float         # 0 = at the viewer, 1 = the sky
    snow_phase: float       # makes the snow line wavy rather than flat


@dataclass(frozen=True)
class _Tree:
    """A tree standing on the meadow at (x, base); kind is 'cone' or 'blob'."""
    x: float
    base: float
    height: float
    kind: str
    width: float            # crown half-width as a fraction of height
    tint: float             # picks the crown colour from the domain palette


@dataclass(frozen=True)
class _Layout:
    """Everything that stays the same when a scene changes domain."""
    horizon: float
    ridges: tuple
    lake: tuple             # (cx, cy, half_width, half_height) or ()
    trees: tuple
    sun: tuple              # (x, y, radius)
    clouds: tuple           # per cloud: array of puffs (cx, cy, a, b)
    ground_noise: np.ndarray
    fine_noise: np.ndarray
    blossoms: np.ndarray    # (N, 2) x, y of meadow blossoms
    crown_blossoms: np.ndarray  # (N, 2) x, y of blossoms on blob crowns


def _draw_ridge(rng, base, amp, octaves, f0, distance):
    """A random fractal ridge: a smooth first octave, sharper peaks above it."""
    k = np.arange(octaves)
    freqs = f0 * 2.1 ** k * rng.uniform(0.85, 1.2, octaves)
    weights = 0.45 ** k * rng.uniform(0.7, 1.0, octaves)
    ridged = rng.random(octaves) < 0.6
    ridged[0] = False
    return _Ridge(base=base, amp=amp, freqs=freqs, phases=rng.uniform(0, 2 * np.pi, octaves),
                  weights=weights, ridged=ridged, distance=distance,
                  snow_phase=float(rng.uniform(0, 2 * np.pi)))


def _draw_cloud(rng, horizon):
    """A cloud as a row of overlapping elliptic puffs, some raised above its base line."""
    cx = rng.uniform(-0.05, 1.05)
    cy = rng.uniform(0.06, max(0.08, horizon - 0.18))
    width = rng.uniform(0.10, 0.22)
    n = int(rng.integers(3, 7))
    px = cx + rng.uniform(-1, 1, n) * width
    pa = rng.uniform(0.05, 0.09, n)
    pb = pa * rng.uniform(0.45, 0.7, n)
    py = cy - pb * rng.uniform(0.0, 0.6, n)
    return np.stack([px, py, pa, pb], axis=1)


def _draw_tree_layout(rng, horizon, lake):
    """2-7 trees on the meadow, sorted far to near so near ones are drawn last."""
    trees = []
    for _ in range(int(rng.integers(2, 8))):
        # A few tries to keep the tree out of the lake; give up quietly otherwise.
        for _ in range(5):
            x = rng.uniform(0.0, 1.0)
            base = horizon + rng.uniform(0.03, 1.0) ** 1.3 * (1.02 - horizon)
            if not lake or ((x - lake[0]) / lake[2]) ** 2 + ((base - lake[1]) / lake[3]) ** 2 > 1.3:
                break
        nearness = (base - horizon) / (1.0 - horizon)
        height = (0.07 + 0.33 * nearness) * rng.uniform(0.75, 1.3)
        kind = 'cone' if rng.random() < 0.45 else 'blob'
        width = rng.uniform(0.22, 0.32) if kind == 'cone' else rng.uniform(0.28, 0.40)
        trees.append(_Tree(x=x, base=base, height=height, kind=kind, width=width,
                           tint=float(rng.random())))
    return tuple(sorted(trees, key=lambda t: t.base))


def _draw_layout(seed):
    """Draw the geometry of one scene from its layout seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_LAYOUT]))
    horizon = rng.uniform(0.48, 0.66)
    ridges = [_draw_ridge(rng, base=horizon + 0.01, amp=rng.uniform(0.18, 0.36),
                          octaves=4, f0=rng.uniform(0.7, 1.5), distance=0.85)]
    if rng.random() < 0.6:
        ridges.append(_draw_ridge(rng, base=horizon + 0.01, amp=rng.uniform(0.06, 0.15),
                                  octaves=3, f0=rng.uniform(0.5, 1.1), distance=0.7))
    lake = ()
    if rng.random() < 0.5:
        half_h = rng.uniform(0.03, 0.09)
        cy = rng.uniform(horizon + half_h + 0.02, 0.9)
        lake = (rng.uniform(0.15, 0.85), cy, rng.uniform(0.12, 0.3), half_h)
    trees = _draw_tree_layout(rng, horizon, lake)
    sun = (rng.uniform(0.1, 0.9), rng.uniform(0.08, horizon - 0.2), rng.uniform(0.035, 0.055))
    clouds = tuple(_draw_cloud(rng, horizon) for _ in range(8))
    ground_noise = rng.random((9, 9))
    fine_noise = rng.random((33, 33))
    blossoms = np.stack([rng.random(90), horizon + rng.random(90) * (1.0 - horizon)], axis=1)
    crown_blossoms = rng.random((400, 2))
    return _Layout(horizon=horizon, ridges=tuple(ridges), lake=lake, trees=trees, sun=sun,
                   clouds=clouds, ground_noise=ground_noise, fine_noise=fine_noise,
                   blossoms=blossoms, crown_blossoms=crown_blossoms)


# ---------------------------------------------------------------------------
# Vectorised drawing helpers. Images are float HxWx3 in [0, 1].
# ---------------------------------------------------------------------------

def _rgb(colour):
    """0-255 RGB tuple -> float array in [0, 1]."""
    return np.asarray(colour, dtype=np.float64) / 255.0


def _coverage(signed_dist, size):
    """Anti-aliased coverage from a signed distance (normalised units, > 0 inside)."""
    return np.clip(signed_dist * size + 0.5, 0.0, 1.0)


def _upsample(grid, size):
    """Smooth (smoothstep-bilinear) value noise: a square grid stretched over size x size."""
    n = grid.shape[0] - 1
    t = (np.arange(size) + 0.5) / size * n
    i = np.minimum(t.astype(int), n - 1)
    f = t - i
    f = f * f * (3.0 - 2.0 * f)
    rows = grid[i] * (1.0 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1.0 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _box(size, x0, x1, y0, y1):
    """(row, column) slices of the pixels a shape within [x0, x1] x [y0, y1] can touch, or None.

    Small shapes are drawn inside their box only: full-frame arithmetic for
    every cloud puff and tree would dominate the rendering time.
    """
    c0, c1 = max(0, int(np.floor(x0 * size)) - 1), min(size, int(np.ceil(x1 * size)) + 1)
    r0, r1 = max(0, int(np.floor(y0 * size)) - 1), min(size, int(np.ceil(y1 * size)) + 1)
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


def _paint(img, depth, alpha, colour, distance):
    """Composite `colour` with coverage `alpha` over img, and record its distance."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * colour
    depth += alpha * (distance - depth)


def _stamp(size, cx, cy, radius, alpha_fn):
    """Max-composite many small shapes into a size x size coverage map.

    cx, cy are shape centres in pixels, radius (int) the half-size of the
    patch each shape may touch, alpha_fn(dx, dy) the coverage at offsets of
    pixel centres from a shape centre. All shapes are drawn in one go on an
    (N, patch, patch) grid, which stays small because shapes are small.
    """
    canvas = np.zeros(size * size)
    if len(cx) == 0:
        return canvas.reshape(size, size)
    off = np.arange(-radius, radius + 1)
    px = np.floor(cx).astype(int)[:, None, None] + off[None, None, :]
    py = np.floor(cy).astype(int)[:, None, None] + off[None, :, None]
    alpha = alpha_fn(px + 0.5 - cx[:, None, None], py + 0.5 - cy[:, None, None])
    px, py = np.broadcast_arrays(px, py)
    keep = (px >= 0) & (px < size) & (py >= 0) & (py < size) & (alpha > 0)
    np.maximum.at(canvas, py[keep] * size + px[keep], alpha[keep])
    return canvas.reshape(size, size)


def _discs(size, x, y, r_px, strength=1.0):
    """Anti-aliased discs at normalised (x, y) with radii in pixels."""
    r = np.asarray(r_px, dtype=np.float64)[:, None, None] * np.ones((len(x), 1, 1))
    reach = int(np.ceil(r.max())) + 1 if len(x) else 0
    return _stamp(size, np.asarray(x) * size, np.asarray(y) * size, reach,
                  lambda dx, dy: strength * np.clip(r + 0.5 - np.hypot(dx, dy), 0.0, 1.0))


def _ridge_profile(ridge, xs, octaves=None):
    """Height profile y(x) of a ridge at the normalised columns xs (optionally only the first octaves)."""
    k = slice(0, octaves)
    waves = np.sin(2 * np.pi * ridge.freqs[k, None] * xs[None, :] + ridge.phases[k, None])
    waves = np.where(ridge.ridged[k, None], 1.0 - 2.0 * np.abs(waves), waves)
    shape = 0.5 + 0.5 * (ridge.weights[k] @ waves) / ridge.weights.sum()
    return ridge.base - ridge.amp * shape


# ---------------------------------------------------------------------------
# Scene rendering, painted back to front.
# ---------------------------------------------------------------------------

def _ground_distance(ys, horizon):
    """Distance of the meadow at image rows ys: 0.6 at the horizon, 0 at the bottom."""
    t = np.clip((ys - horizon) / (1.0 - horizon), 0.0, 1.0)
    return 0.6 * (1.0 - t) ** 1.6


def _draw_sky(img, depth, layout, look, xs, ys, size, n_clouds):
    """Sky gradient, sun with glow, and the first n_clouds clouds."""
    t = np.clip(ys / layout.horizon, 0.0, 1.0)[:, :, None] ** 1.3
    img[:] = (1 - t) * _rgb(look['sky_top']) + t * _rgb(look['sky_horizon'])
    depth[:] = 1.0
    sx, sy, sr = layout.sun
    if look['sun'] > 0:
        d = np.hypot(xs - sx, ys - sy)
        glow = look['sun'] * 0.45 * np.exp(-(d / (3.5 * sr)) ** 2)
        _paint(img, depth, glow, _rgb(look['sun_colour']), 1.0)
        _paint(img, depth, look['sun'] * _coverage(sr - d, size), _rgb(look['sun_colour']), 1.0)
    scale = look['cloud_scale']
    for puffs in layout.clouds[:n_clouds]:
        centre = puffs[:, :2].mean(0)
        pxy = centre + (puffs[:, :2] - centre) * scale
        pab = puffs[:, 2:] * scale
        lo, hi = (pxy - pab).min(0), (pxy + pab).max(0)
        box = _box(size, lo[0], hi[0], lo[1], hi[1])
        if box is not None:
            _draw_cloud_puffs(img[box], depth[box], xs[:, box[1]], ys[box[0], :], pxy, pab, look)


def _draw_cloud_puffs(img, depth, xs, ys, pxy, pab, look):
    """Composite the elliptic puffs of one cloud, in order, over a box of the image.

    All puffs are evaluated at once; painting P layers in order equals
    bg * prod(1 - a_i) + sum_i a_i c_i prod_{j > i}(1 - a_j).
    """
    px, py = pxy[:, 0, None, None], pxy[:, 1, None, None]
    pa, pb = pab[:, 0, None, None], pab[:, 1, None, None]
    r = np.hypot((xs[None] - px) / pa, (ys[None] - py) / pb)
    alpha = look['cloud_alpha'] * np.clip((1.0 - r) * 3.0, 0.0, 1.0)
    # Darker undersides: shade by height within each puff.
    v = np.clip((ys[None] - (py - pb)) / (2 * pb), 0.0, 1.0)[..., None]
    colour = (1 - v) * _rgb(look['cloud_colour']) + v * _rgb(look['cloud_shade'])
    keep = 1.0 - alpha
    # Transmittance of the puffs painted after puff i (1 for the last one).
    after = np.concatenate([np.cumprod(keep[::-1], axis=0)[::-1][1:], np.ones_like(keep[:1])])
    total = np.prod(keep, axis=0)
    img *= total[..., None]
    img += ((alpha * after)[..., None] * colour).sum(0)
    depth += (1.0 - total) * (1.0 - depth)


def _draw_ridges(img, depth, layout, look, xs, ys, size):
    """Mountain ridges, lit from the sun side, with snow caps above a wavy snow line."""
    side = 1.0 if layout.sun[0] < 0.5 else -1.0
    snow = _rgb(look['snow_colour'])
    for ridge, name in zip(layout.ridges, ('far_ridge', 'near_ridge')):
        prof = _ridge_profile(ridge, xs[0])
        # Shade by the slope of a smoothed profile: per-column shading of the
        # fine octaves would stripe the mountain like a skyline.
        slope = np.gradient(_ridge_profile(ridge, xs[0], octaves=2), xs[0])
        shade = 1.0 - 0.2 * np.tanh(side * slope * 1.5)
        colour = _rgb(look[name])[None, None, :] * shade[None, :, None]
        colour = colour * (1.0 - 0.15 * np.clip((ys - prof) / ridge.amp, 0, 1))[:, :, None]
        if look['snowcap'] > 0:
            top = ridge.base - ridge.amp
            # Two incommensurate waves: one regular wave looks like a saw blade.
            wave = (np.sin(2 * np.pi * 5.3 * xs + ridge.snow_phase)
                    + 0.6 * np.sin(2 * np.pi * 13.7 * xs + 2.0 * ridge.snow_phase))
            line = top + look['snowcap'] * ridge.amp * (1.0 + 0.15 * wave)
            cap = _coverage(line - ys, size)[:, :, None] * np.clip(0.7 + 0.5 * shade, 0, 1)[None, :, None]
            colour = colour * (1 - cap) + cap * snow
        _paint(img, depth, _coverage(ys - prof[None, :], size), colour, ridge.distance)


def _draw_ground(img, depth, layout, look, xs, ys, size):
    """Meadow from the horizon down, with a lake reflecting the sky."""
    h = layout.horizon
    t = np.clip((ys - h) / (1.0 - h), 0.0, 1.0)[:, :, None]
    colour = (1 - t) * _rgb(look['ground_far']) + t * _rgb(look['ground_near'])
    tex = _upsample(layout.ground_noise, size) * 0.7 + _upsample(layout.fine_noise, size) * 0.3
    colour = colour * (1.0 + look['ground_texture'] * (tex - 0.5))[:, :, None]
    _paint(img, depth, _coverage(ys - h, size), colour, _ground_distance(ys, h))
    if layout.lake:
        cx, cy, a, b = layout.lake
        r = np.hypot((xs - cx) / a, (ys - cy) / b)
        # Mirror the sky colour seen at the reflected angle.
        v = np.clip((ys - (cy - b)) / (2 * b), 0.0, 1.0)[:, :, None]
        sky = (1 - v) * _rgb(look['sky_horizon']) + v * _rgb(look['sky_top'])
        colour = look['water_reflect'] * sky + (1 - look['water_reflect']) * _rgb(look['water'])
        _paint(img, depth, _coverage((1.0 - r) * b, size), colour, _ground_distance(ys, h))


def _tree_shapes(tree, xs, ys, size):
    """Coverage of the crown and the trunk of one tree."""
    x, base, h = tree.x, tree.base, tree.height
    trunk_w = max(0.05 * h, 0.6 / size)
    if tree.kind == 'cone':
        top, bottom, w = base - h, base - 0.15 * h, tree.width * h
        inside = w * (ys - top) / (bottom - top) - np.abs(xs - x)
        crown = _coverage(np.minimum(np.minimum(inside * h / np.hypot(h, w), bottom - ys),
                                     ys - top), size)
        trunk_top = bottom - 0.02 * h
    else:
        cy, a, b = base - 0.62 * h, tree.width * h, 0.38 * h
        r = np.hypot((xs - x) / a, (ys - cy) / b)
        crown = _coverage((1.0 - r) * min(a, b), size)
        trunk_top = cy
    trunk = _coverage(np.minimum(np.minimum(trunk_w - np.abs(xs - x), ys - trunk_top), base - ys), size)
    return crown, trunk


def _draw_trees(img, depth, layout, look, xs, ys, size):
    """Trees far to near; returns the visible coverage of blob crowns and of all trees (for blossoms)."""
    side = 1.0 if layout.sun[0] < 0.5 else -1.0
    fine = _upsample(layout.fine_noise, size)
    # Snow settles in soft patches on the crowns, more of it in snowier looks.
    snowy = np.clip((fine - (1.0 - look['crown_snow'])) * 5.0 + 0.5, 0.0, 1.0)[:, :, None]
    blob_crowns = np.zeros((size, size))
    cover = np.zeros((size, size))
    for tree in layout.trees:
        half = max(tree.width * tree.height, 0.05 * tree.height, 0.6 / size)
        box = _box(size, tree.x - half, tree.x + half, tree.base - tree.height, tree.base)
        if box is None:
            continue
        bx, by = xs[:, box[1]], ys[box[0], :]
        crown, trunk = _tree_shapes(tree, bx, by, size)
        dist = float(_ground_distance(np.array(tree.base), layout.horizon))
        _paint(img[box], depth[box], trunk, _rgb(look['trunk']), dist)
        if tree.kind == 'cone':
            base_colour = _rgb(look['cone'])
        else:
            palette = look['crowns']
            base_colour = _rgb(palette[int(tree.tint * len(palette))])
        # Lit on the sun side, with a leafy texture.
        light = 1.0 + 0.18 * np.clip(side * (tree.x - bx) / half, -1, 1)
        colour = base_colour * (light * (0.85 + 0.3 * fine[box]))[:, :, None]
        colour = colour * (1 - snowy[box]) + snowy[box] * _rgb(look['snow_colour'])
        _paint(img[box], depth[box], crown, colour, dist)
        cover[box] = 1.0 - (1.0 - cover[box]) * (1.0 - crown) * (1.0 - trunk)
        if tree.kind == 'blob':
            blob_crowns[box] = np.maximum(blob_crowns[box], crown)
        else:
            blob_crowns[box] *= 1.0 - crown
    return blob_crowns, cover


def _draw_blossoms(img, layout, size, density, blob_crowns, trees):
    """Spring: pink dots on the meadow in front of the trees, white ones on the blob crowns."""
    r = max(0.5, 0.006 * size)
    meadow_xy = layout.blossoms[:int(density * len(layout.blossoms))]
    crown_xy = layout.crown_blossoms[:int(density * len(layout.crown_blossoms))]
    meadow = _discs(size, meadow_xy[:, 0], meadow_xy[:, 1], np.full(len(meadow_xy), r)) * (1.0 - trees)
    crowns = _discs(size, crown_xy[:, 0], crown_xy[:, 1], np.full(len(crown_xy), r)) * blob_crowns
    img[:] = img * (1 - meadow[:, :, None]) + meadow[:, :, None] * _rgb((245, 190, 215))
    img[:] = img * (1 - crowns[:, :, None]) + crowns[:, :, None] * _rgb((252, 245, 248))


def _apply_haze(img, depth, look):
    """Aerial perspective / fog: blend towards the haze colour with distance."""
    colour = _rgb(look['haze_colour'] or look['sky_horizon'])
    k = look['haze_falloff']
    amount = look['haze'] * (1.0 - np.exp(-k * depth)) / (1.0 - np.exp(-k))
    img[:] = img * (1 - amount[:, :, None]) + amount[:, :, None] * colour


def _draw_rain(img, rng, size, count):
    """Diagonal rain streaks, all with one wind slant per image."""
    slant = rng.uniform(0.2, 0.45) * rng.choice([-1.0, 1.0])
    half_len = rng.uniform(0.03, 0.05) * size
    ux, uy = slant / np.hypot(1.0, slant), 1.0 / np.hypot(1.0, slant)
    half_w = max(0.3, 0.0015 * size)
    cx = rng.uniform(-0.05, 1.05, count) * size
    cy = rng.uniform(-0.05, 1.05, count) * size
    strength = rng.uniform(0.2, 0.45, count)[:, None, None]

    def streak(dx, dy):
        t = np.clip(dx * ux + dy * uy, -half_len, half_len)
        d = np.hypot(dx - t * ux, dy - t * uy)
        return strength * np.clip(half_w + 0.5 - d, 0.0, 1.0) * (1.0 - 0.6 * np.abs(t) / half_len)

    rain = _stamp(size, cx, cy, int(np.ceil(half_len)) + 2, streak)[:, :, None]
    img[:] = img * (1 - rain) + rain * _rgb((210, 215, 225))


def _draw_snowfall(img, rng, size, count):
    """Snowflakes of several sizes; more small (far) flakes than big (near) ones."""
    r = np.maximum(0.45, rng.uniform(0.0, 1.0, count) ** 2 * 0.012 * size + 0.002 * size)
    flakes = _discs(size, rng.random(count), rng.random(count), r, strength=0.8)[:, :, None]
    img[:] = img * (1 - flakes) + flakes * _rgb((250, 251, 255))


def _finish(img, look, rng):
    """Global colour grading with a little per-image jitter, then to uint8."""
    lum = img @ np.array([0.299, 0.587, 0.114])
    img = lum[:, :, None] + look['saturation'] * (img - lum[:, :, None])
    img = 0.5 + look['contrast'] * (img - 0.5)
    j = look['jitter']
    warm = np.array([1.0 + look['tint'], 1.0, 1.0 - look['tint']])   # colour temperature of the light
    img = img * warm * look['light'] * look['brightness'] * rng.uniform(1 - j, 1 + j) + rng.uniform(-j, j, 3) * 0.4
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_scene_args(dataset, domain, size):
    """Raise ValueError for an unknown dataset/domain or an unsupported size."""
    if dataset not in DATASETS:
        raise ValueError(f'unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}')
    if domain not in DATASETS[dataset]:
        raise ValueError(f'unknown {dataset} domain {domain!r}; choose one of {DATASETS[dataset]}')
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f'image size must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {size!r}')


def render_scene(layout_seed, dataset, domain, size=64, style_seed=None):
    """Render the layout drawn from `layout_seed` in one domain: uint8 (size, size, 3).

    The geometry depends only on layout_seed, so rendering one seed in every
    domain of a dataset gives paired images with the same structure. Rain,
    snowflakes and a slight colour jitter come from a (seed, dataset, domain)
    stream, so they differ between domains but are deterministic. The image's
    style within the domain (light, palette, sky) is drawn from style_seed,
    by default the layout's own seed (as the datasets are drawn); another
    style_seed renders the same scene in another style of the domain.
    """
    _check_scene_args(dataset, domain, size)
    style_seed = layout_seed if style_seed is None else style_seed
    for name, value in (('layout_seed', layout_seed), ('style_seed', style_seed)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f'{name} must be a non-negative integer, got {value!r}')
    layout_seed, style_seed = int(layout_seed), int(style_seed)
    style_rng = np.random.default_rng(np.random.SeedSequence(
        [style_seed, _STREAM_STYLE, zlib.crc32(dataset.encode()), zlib.crc32(domain.encode())]))
    look = _vary_look(_look(dataset, domain), style_rng)
    layout = _draw_layout(layout_seed)
    rng = np.random.default_rng(np.random.SeedSequence(
        [layout_seed, _STREAM_APPEARANCE, zlib.crc32(dataset.encode()), zlib.crc32(domain.encode())]))
    n_clouds = int(rng.integers(look['clouds'][0], look['clouds'][1] + 1))

    centres = (np.arange(size) + 0.5) / size
    xs, ys = centres[None, :], centres[:, None]
    img = np.zeros((size, size, 3))
    depth = np.zeros((size, size))
    _draw_sky(img, depth, layout, look, xs, ys, size, n_clouds)
    _draw_ridges(img, depth, layout, look, xs, ys, size)
    _draw_ground(img, depth, layout, look, xs, ys, size)
    blob_crowns, trees = _draw_trees(img, depth, layout, look, xs, ys, size)
    if look['blossom'] > 0:
        _draw_blossoms(img, layout, size, look['blossom'], blob_crowns, trees)
    _apply_haze(img, depth, look)
    if look['rain']:
        _draw_rain(img, rng, size, look['rain'])
    if look['snowfall']:
        _draw_snowfall(img, rng, size, look['snowfall'])
    return _finish(img, look, rng)


def layout_seed(dataset, domain, split, index, seed=0):
    """The layout seed of image `index` of `domain` in `split` of a dataset drawn with `seed`.

    The low bits hold (domain, split, index) exactly, so no two images of one
    dataset share a layout; the high bits hash (dataset, seed). The layout
    itself comes from SeedSequence(layout_seed), which mixes all bits, so
    neighbouring seeds still give unrelated scenes.
    """
    domains = DATASETS[dataset]
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    if not 0 <= index < 2 ** _INDEX_BITS:
        raise ValueError(f'index out of range: {index}')
    high = int(np.random.SeedSequence([int(seed), zlib.crc32(dataset.encode())]).generate_state(1)[0])
    low = ((domains.index(domain) * len(SPLITS) + SPLITS.index(split)) << _INDEX_BITS) | index
    return (high << 32) | low


# ---------------------------------------------------------------------------
# Dataset files.
# ---------------------------------------------------------------------------

def _params(dataset, num_train, num_val, img_size, seed):
    """The marker contents that identify a generated dataset."""
    return {'generator': GENERATOR, 'version': VERSION, 'dataset': dataset,
            'domains': list(DATASETS[dataset]), 'num_train': num_train, 'num_val': num_val,
            'img_size': img_size, 'seed': seed}


def _check_dataset_args(dataset, num_train, num_val, img_size, seed):
    """Raise ValueError with one clear sentence for any bad argument."""
    if dataset not in DATASETS:
        raise ValueError(f'unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}')
    for name, value, low in (('num_train', num_train, 1), ('num_val', num_val, 0), ('seed', seed, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f'{name} must be an integer >= {low}, got {value!r}')
    if max(num_train, num_val) > 2 ** _INDEX_BITS:
        raise ValueError(f'at most {2 ** _INDEX_BITS} images per domain and split')
    _check_scene_args(dataset, DATASETS[dataset][0], img_size)


def _read_marker(path):
    """The parsed marker of a dataset folder, or None if absent or unreadable."""
    try:
        with open(path / MARKER, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_complete(path, params):
    """True if path holds a finished dataset with exactly these parameters."""
    if _read_marker(path) != params:
        return False
    for split, count in (('train', params['num_train']), ('val', params['num_val'])):
        for domain in params['domains']:
            folder = path / split / domain
            if not folder.is_dir() or len(list(folder.glob('*.png'))) != count:
                return False
    return True


def _save_png(array, path):
    """Write one image; PIL's PNG writer adds no timestamps, so files are reproducible."""
    Image.fromarray(array).save(path, format='PNG')


def _write_all(tmp, params):
    """Render every image of the dataset into tmp, then the marker as the very last file."""
    dataset, seed, size = params['dataset'], params['seed'], params['img_size']
    for split, count in (('train', params['num_train']), ('val', params['num_val'])):
        for domain in params['domains']:
            folder = tmp / split / domain
            folder.mkdir(parents=True)
            for i in range(count):
                img = render_scene(layout_seed(dataset, domain, split, i, seed), dataset, domain, size)
                _save_png(img, folder / f'{i:04d}.png')
    with open(tmp / MARKER, 'w', encoding='utf-8') as f:
        json.dump(params, f, indent=2, sort_keys=True)
        f.write('\n')


def _reusable(out, params, overwrite):
    """True if out already holds this exact dataset; raise if it holds anything else we may not replace."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f'{out} exists and is not a directory')
    if not out.is_dir():
        return False
    if _is_complete(out, params):
        return True
    if any(out.iterdir()) and not overwrite:
        what = ('a synthetic dataset with other parameters or missing files' if _read_marker(out)
                else 'files that are not a complete synthetic dataset')
        raise FileExistsError(f'{out} already holds {what}; pass overwrite=True (--overwrite) '
                              f'to replace it, or choose another folder')
    return False


def _make(dataset, out_dir, num_train, num_val, img_size, seed, overwrite):
    """make_dataset, also telling whether anything was written: (path, created)."""
    _check_dataset_args(dataset, num_train, num_val, img_size, seed)
    params = _params(dataset, int(num_train), int(num_val), int(img_size), int(seed))
    out = Path(out_dir)
    if _reusable(out, params, overwrite):
        return out, False
    out.parent.mkdir(parents=True, exist_ok=True)
    # Generate next to the target and rename into place: a killed run leaves
    # only a hidden ".partial" folder, never a half dataset under `out`.
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.partial', dir=out.parent))
    try:
        _write_all(tmp, params)
        # Check again: another process may have filled `out` meanwhile.
        if _reusable(out, params, overwrite):
            shutil.rmtree(tmp)
            return out, False
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.old', dir=out.parent))
            os.replace(out, old / 'data')
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, True


def make_dataset(dataset, out_dir, num_train=60, num_val=8, img_size=64, seed=0, overwrite=False):
    """Write a synthetic dataset to out_dir and return its path.

    Images go to out_dir/{train,val}/<domain>/<NNNN>.png, with the parameters
    in out_dir/synthetic.json, written last. If out_dir already holds a
    complete dataset with the same parameters nothing is written; if it holds
    anything else (other than being empty), FileExistsError is raised unless
    overwrite=True. The same arguments always give byte-identical files.
    """
    return _make(dataset, out_dir, num_train, num_val, img_size, seed, overwrite)[0]


# ---------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------

def _int_in(low, high=None):
    """An argparse type: an integer in [low, high] (high None = unbounded)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
        if value < low or (high is not None and value > high):
            bounds = f'from {low} to {high}' if high is not None else f'>= {low}'
            raise argparse.ArgumentTypeError(f'must be {bounds}, got {value}')
        return value
    return parse


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog='python -m core.data.synthetic',
        description='Generate a synthetic seasons/weather landscape dataset.')
    parser.add_argument('dataset', choices=sorted(DATASETS))
    parser.add_argument('--out', required=True, help='output folder, e.g. data/synthetic-seasons')
    parser.add_argument('--num_train', type=_int_in(1), default=60, help='train images per domain')
    parser.add_argument('--num_val', type=_int_in(0), default=8, help='val images per domain')
    parser.add_argument('--img_size', type=_int_in(MIN_SIZE, MAX_SIZE), default=64,
                        help=f'image side in pixels, {MIN_SIZE}-{MAX_SIZE}')
    parser.add_argument('--seed', type=_int_in(0), default=0)
    parser.add_argument('--overwrite', action='store_true', help='replace whatever is in --out')
    args = parser.parse_args(argv)
    try:
        path, created = _make(args.dataset, args.out, args.num_train, args.num_val,
                              args.img_size, args.seed, args.overwrite)
    except (ValueError, OSError) as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    domains = DATASETS[args.dataset]
    verb = 'wrote' if created else 'reused existing'
    print(f'{verb} {args.dataset} dataset in {path}: {len(domains)} domains ({", ".join(domains)}), '
          f'{args.num_train} train + {args.num_val} val images each, {args.img_size}x{args.img_size} px')
    return 0


if __name__ == '__main__':
    sys.exit(main())
