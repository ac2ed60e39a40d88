"""Deterministic offline data: real handwritten digits, procedural images, generated topic text.

atlbench must run a genuine transfer-learning study with no network, so the built-in targets are
made here from a seed alone. Everything is numpy and vectorised over the batch (a few thousand
32x32 images take a fraction of a second), and every generator is exactly reproducible: the same
seed gives the same bytes on any machine, a different seed gives different data.

Images are uint8 ``[N, size, size, 3]``, labels int64 ``[N]`` and ``class_names[label]`` names the
class of every example. A :class:`DomainShift` is drawn from its own random stream, so the shifted
images are exactly the unshifted ones with the shift applied (for the same seed).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Images = tuple[np.ndarray, np.ndarray, list[str]]
ClassSpec = int | Sequence[int | str] | None

COLOUR_SHIFTS = ("swap", "bgr", "grey", "warm", "cool")
# Bump when any generator's output changes: it enters every built-in target's cell keys.
GENERATOR_VERSION = 2

# Stream ids keep each family's randomness independent of the others (and of the shift stream).
_STREAM = {"shapes": 1, "textures": 2, "fractals": 3, "digits": 4, "text": 5}
_SHIFT_STREAM = 99


def _rng(seed: int, stream: int, *extra: int) -> np.random.Generator:
    """A generator keyed by (seed, stream); negative seeds are folded so any int works."""
    return np.random.default_rng([int(seed) % 2**64, stream, *extra])


# --------------------------------------------------------------------------------------------
# Domain shift
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainShift:
    """A controllable change of the input distribution (and optionally of the label semantics).

    Applied in this order, so each field means one thing:

    - ``rotation``: degrees, counter-clockwise about the image centre, edges replicated; with
      ``random_rotation`` every image gets its own uniform angle in ``[-rotation, rotation]``.
    - ``blur``: Gaussian blur sigma in pixels.
    - ``colour``: a whole-image colour change. ``"swap"`` cycles the channels (R,G,B)->(B,R,G),
      ``"bgr"`` reverses them, ``"grey"`` replaces colour by the channel mean, ``"warm"`` and
      ``"cool"`` multiply by an orange or blue tint (black stays black, so on dark-background data
      such as digits only the foreground strokes change colour).
    - ``invert``: ``255 - x``.
    - ``noise``: additive Gaussian pixel noise, std in [0, 1] intensity units, then clipped.
    - ``label_permutation``: seed of a permutation of the class ids (None = identity). The inputs
      stay the same but label ``i`` becomes ``perm[i]``; generators reorder ``class_names`` with it
      so names still describe the images, while a source head trained on the unpermuted task now
      points at the wrong classes.
    """

    rotation: float = 0.0
    invert: bool = False
    colour: str | None = None
    noise: float = 0.0
    blur: float = 0.0
    label_permutation: int | None = None
    random_rotation: bool = False

    def __post_init__(self) -> None:
        if self.colour is not None and self.colour not in COLOUR_SHIFTS:
            raise ValueError(
                f"unknown colour shift {self.colour!r}; choose one of {', '.join(COLOUR_SHIFTS)}"
            )
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be a std in [0, 1], got {self.noise}")
        if self.blur < 0:
            raise ValueError(f"blur must be >= 0, got {self.blur}")

    def permutation(self, num_classes: int) -> np.ndarray:
        """The label map ``new = perm[old]`` (identity when ``label_permutation`` is None)."""
        if self.label_permutation is None:
            return np.arange(num_classes)
        return np.random.default_rng(int(self.label_permutation) % 2**64).permutation(num_classes)


def rotate_images(images: np.ndarray, angles: float | np.ndarray) -> np.ndarray:
    """Bilinear rotation of ``[N, H, W, C]`` float images about their centres, edges replicated.

    One gather for the whole batch instead of a scipy call per image, which keeps a random
    rotation of thousands of images cheap. Positive angles turn the content counter-clockwise.
    """
    n, h, w, c = images.shape
    theta = np.deg2rad(np.asarray(angles, dtype=np.float64)).reshape(-1, 1, 1)
    yy, xx = np.meshgrid(
        np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij"
    )
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    dy, dx = yy - cy, xx - cx
    cos, sin = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
    # inverse map: where in the source each output pixel comes from
    sy = np.clip(cos * dy + sin * dx + cy, 0, h - 1)
    sx = np.clip(cos * dx - sin * dy + cx, 0, w - 1)
    y0 = np.floor(sy).astype(np.intp)
    x0 = np.floor(sx).astype(np.intp)
    wy = (sy - y0).astype(np.float32)
    wx = (sx - x0).astype(np.float32)
    # flat pixel indices (int32, one map shared by the batch when the angle is fixed); gathering
    # each channel plane with 1-D np.take is far cheaper than fancy indexing on [n, h, w, c]
    i00 = (y0 * w + x0).astype(np.int32)
    if i00.shape[0] > 1 or n == 1:
        i00 = i00 + (np.arange(n, dtype=np.int32) * (h * w))[:, None, None]
    i01 = i00 + (x0 < w - 1)
    i10 = i00 + np.where(y0 < h - 1, w, 0).astype(np.int32)
    i11 = i10 + (x0 < w - 1)
    out = np.empty((n, h, w, c), dtype=np.float32)
    for ch in range(c):
        plane = np.ascontiguousarray(images[..., ch], dtype=np.float32)
        if i00.shape[0] == n:
            src = plane.reshape(-1)
            top = src.take(i00) * (1 - wx) + src.take(i01) * wx
            bottom = src.take(i10) * (1 - wx) + src.take(i11) * wx
        else:  # fixed angle: same [h, w] map for every image
            rows = plane.reshape(n, -1)
            top = rows[:, i00[0]] * (1 - wx) + rows[:, i01[0]] * wx
            bottom = rows[:, i10[0]] * (1 - wx) + rows[:, i11[0]] * wx
        out[..., ch] = top * (1 - wy) + bottom * wy
    return out


_TINTS = {"warm": (1.0, 0.8, 0.55), "cool": (0.55, 0.8, 1.0)}


def apply_shift(
    images: np.ndarray,
    labels: np.ndarray,
    shift: DomainShift | None,
    rng: np.random.Generator,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``shift`` to uint8 images ``[N, H, W, 3]`` and int labels; returns new arrays.

    ``num_classes`` sizes the label permutation (default ``labels.max() + 1``). Only rotation with
    ``random_rotation`` and noise consume ``rng``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if shift is None:
        return images, labels
    x = images.astype(np.float32)  # stays in 0..255 so inversion is exact
    if shift.rotation:
        angles = (
            rng.uniform(-shift.rotation, shift.rotation, len(x))
            if shift.random_rotation
            else float(shift.rotation)
        )
        x = rotate_images(x, angles)
    if shift.blur:
        x = ndimage.gaussian_filter(x, sigma=(0, shift.blur, shift.blur, 0), mode="nearest")
    if shift.colour == "swap":
        x = x[..., [2, 0, 1]]
    elif shift.colour == "bgr":
        x = x[..., ::-1]
    elif shift.colour == "grey":
        x = np.repeat(x.mean(-1, keepdims=True), 3, axis=-1)
    elif shift.colour in _TINTS:
        x = x * np.asarray(_TINTS[shift.colour], dtype=np.float32)
    if shift.invert:
        x = 255.0 - x
    if shift.noise:
        x = x + np.float32(shift.noise * 255.0) * rng.standard_normal(x.shape, dtype=np.float32)
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if shift.label_permutation is not None:
        k = int(labels.max()) + 1 if num_classes is None else num_classes
        labels = shift.permutation(k)[labels]
    return out, labels


def _finish(
    images: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    shift: DomainShift | None,
    seed: int,
    stream: int,
) -> Images:
    """Shift with an independent stream and keep ``class_names[label]`` true after permutation."""
    images, labels = apply_shift(
        images, labels, shift, _rng(seed, stream, _SHIFT_STREAM), num_classes=len(names)
    )
    if shift is not None and shift.label_permutation is not None:
        perm = shift.permutation(len(names))
        reordered = [""] * len(names)
        for old, new in enumerate(perm):
            reordered[int(new)] = names[old]
        names = reordered
    return images, labels.astype(np.int64), list(names)


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def resolve_classes(names: Sequence[str], classes: ClassSpec) -> list[int]:
    """Indices into ``names`` for a class spec: None (all), k (the first k), or names / ids."""
    if classes is None:
        return list(range(len(names)))
    if isinstance(classes, (int, np.integer)):
        if not 2 <= int(classes) <= len(names):
            raise ValueError(f"classes must be between 2 and {len(names)}, got {classes}")
        return list(range(int(classes)))
    out: list[int] = []
    for c in classes:
        if isinstance(c, str):
            if c not in names:
                raise ValueError(f"unknown class {c!r}; choose from {', '.join(names)}")
            out.append(list(names).index(c))
        else:
            if not 0 <= int(c) < len(names):
                raise ValueError(f"class id {c} out of range 0..{len(names) - 1}")
            out.append(int(c))
    if len(out) < 2 or len(set(out)) != len(out):
        raise ValueError(f"classes must name at least two distinct classes, got {list(classes)}")
    return out


def _balanced_labels(k: int, n_per_class: int, rng: np.random.Generator) -> np.ndarray:
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    return rng.permutation(np.repeat(np.arange(k, dtype=np.int64), n_per_class))


def _frames(
    n: int,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float],
    jitter: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-example local coordinates ``(u, v)`` ``[n, size, size]`` and units-per-pixel ``[n,1,1]``.

    The image spans [-1, 1]; each example gets a random centre (+-jitter), scale and rotation, so
    class identity must be recognised independently of pose.
    """
    lin = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2.0 - 1.0
    cx = rng.uniform(-jitter, jitter, (n, 1, 1)).astype(np.float32)
    cy = rng.uniform(-jitter, jitter, (n, 1, 1)).astype(np.float32)
    s = rng.uniform(scale[0], scale[1], (n, 1, 1)).astype(np.float32)
    theta = rng.uniform(0.0, 2.0 * np.pi, (n, 1, 1))
    cos, sin = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
    dx = lin[None, None, :] - cx
    dy = lin[None, :, None] - cy
    u = (dx * cos + dy * sin) / s
    v = (dy * cos - dx * sin) / s
    return u, v, (2.0 / size) / s


def _contrasting_colours(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random foreground/background RGB in [0, 1] whose luminances differ by at least 0.3."""
    fg = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    bg = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    lum = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    # elementwise sums, not a BLAS product: the same rounding on every machine and thread count
    fg_lum, bg_lum = (fg * lum).sum(axis=1), (bg * lum).sum(axis=1)
    weak = np.abs(fg_lum - bg_lum) < 0.3
    # push the background away from the foreground along the luminance axis
    direction = np.where(fg_lum > 0.5, -1.0, 1.0).astype(np.float32)
    bg[weak] = np.clip(
        fg[weak] + direction[weak, None] * rng.uniform(0.4, 0.7, (weak.sum(), 1)), 0.0, 1.0
    )
    return fg, bg


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _soft(f: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of the region ``f < 0`` (f roughly a distance in local units)."""
    return np.clip(0.5 - f / px, 0.0, 1.0)


def _stamp_specks(img: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """Composite ``count`` tiny soft discs of random colour onto each image (in place)."""
    n, size = img.shape[:2]
    centres = rng.uniform(0, size, (n, count, 2)).astype(np.float32)
    radii = rng.uniform(0.6, 1.6, (n, count, 1)).astype(np.float32)
    colours = rng.uniform(0.0, 1.0, (n, count, 3)).astype(np.float32)
    off = np.arange(-2, 3)
    oy, ox = (a.ravel() for a in np.meshgrid(off, off, indexing="ij"))  # 25 stamp offsets
    base = np.floor(centres).astype(np.intp)
    ys = np.clip(base[..., 1, None] + oy, 0, size - 1)  # [n, count, 25]
    xs = np.clip(base[..., 0, None] + ox, 0, size - 1)
    d = np.hypot(ys + 0.5 - centres[..., 1, None], xs + 0.5 - centres[..., 0, None])
    alpha = np.clip(radii + 0.5 - d, 0.0, 1.0)[..., None]  # [n, count, 25, 1]
    b = np.arange(n)[:, None]
    for j in range(count):
        y, x, a = ys[:, j], xs[:, j], alpha[:, j]
        img[b, y, x] = img[b, y, x] * (1 - a) + colours[:, j, None, :] * a
    return img


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------

SHAPE_CLASSES = ["circle", "square", "triangle", "cross", "ring", "star", "diamond", "bar"]
_OUTLINABLE = {"square", "triangle", "star", "diamond"}


def _box(
    u: np.ndarray, v: np.ndarray, hu: float | np.ndarray, hv: float | np.ndarray
) -> np.ndarray:
    return np.maximum(np.abs(u) - hu, np.abs(v) - hv)


def _shape_field(name: str, u: np.ndarray, v: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Approximate signed distance (negative inside) of a class's shape in local units."""
    if name == "circle":
        return np.hypot(u, v) - 0.8
    if name == "ring":
        return np.abs(np.hypot(u, v) - 0.7) - width / 2
    if name == "square":
        return _box(u, v, 0.68, 0.68)
    if name == "diamond":
        return (np.abs(u) + 1.3 * np.abs(v) - 0.95) / 1.64
    if name == "triangle":  # equilateral, inradius 0.45: the furthest of three edge half-planes
        return np.maximum.reduce(
            [u * np.cos(a) + v * np.sin(a) - 0.45 for a in np.deg2rad([90.0, 210.0, 330.0])]
        )
    if name == "cross":
        return np.minimum(_box(u, v, 0.85, width / 2), _box(u, v, width / 2, 0.85))
    if name == "star":  # five sharp points: radius is a triangle wave of the polar angle
        p = (np.arctan2(v, u) * (5 / (2 * np.pi))) % 1.0
        return 0.55 * (np.hypot(u, v) - (0.35 + 0.55 * np.abs(2.0 * p - 1.0)))
    if name == "bar":
        return _box(u, v, 0.92, width / 2)
    raise KeyError(name)


def shapes(
    n_per_class: int,
    seed: int,
    size: int = 32,
    classes: ClassSpec = None,
    shift: DomainShift | None = None,
) -> Images:
    """Geometric shapes with random pose, size, stroke, colours, background gradient and specks.

    Square, triangle, star and diamond are drawn filled or as outlines; the ring is always an
    outline and the circle always filled so those two stay distinct. Random colours and clutter
    keep raw pixels far from linearly separable, so pre-trained features have something to add.
    """
    ids = resolve_classes(SHAPE_CLASSES, classes)
    rng = _rng(seed, _STREAM["shapes"])
    labels = _balanced_labels(len(ids), n_per_class, rng)
    n = len(labels)
    u, v, px = _frames(n, size, rng, scale=(0.4, 0.8), jitter=0.3)
    width = rng.uniform(0.18, 0.4, (n, 1, 1)).astype(np.float32)
    outline = rng.random(n) < 0.35
    stroke = rng.uniform(0.12, 0.25, (n, 1, 1)).astype(np.float32)
    alpha = np.empty((n, size, size), dtype=np.float32)
    for local, cls in enumerate(ids):
        name = SHAPE_CLASSES[cls]
        sel = np.flatnonzero(labels == local)
        f = _shape_field(name, u[sel], v[sel], width[sel])
        if name in _OUTLINABLE:
            ring = np.abs(f) - stroke[sel] / 2
            f = np.where(outline[sel, None, None], ring, f)
        alpha[sel] = _soft(f, px[sel])
    fg, bg = _contrasting_colours(n, rng)
    # background: colour plus a gentle linear gradient in a random direction
    lin = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    g = rng.normal(0.0, 0.08, (n, 2)).astype(np.float32)
    grad = g[:, 0, None, None] * lin[None, None, :] + g[:, 1, None, None] * lin[None, :, None]
    img = bg[:, None, None, :] + grad[..., None]
    img = img * (1 - alpha[..., None]) + fg[:, None, None, :] * alpha[..., None]
    # clutter: a few small specks of random colour anywhere, stamped as 5x5 soft discs
    img = _stamp_specks(img, rng, count=4)
    img += 0.03 * rng.standard_normal(img.shape, dtype=np.float32)
    return _finish(
        _to_uint8(img), labels, [SHAPE_CLASSES[i] for i in ids], shift, seed, _STREAM["shapes"]
    )


# --------------------------------------------------------------------------------------------
# Textures
# --------------------------------------------------------------------------------------------

TEXTURE_CLASSES = ["stripes", "checker", "dots", "waves", "zigzag", "plaid", "rings", "blobs"]


def _smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise via FFT (periodic), normalised to unit std per image."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    h, w = shape[-2:]
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    out = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(h, w)).astype(np.float32)
    out -= out.mean(axis=(-2, -1), keepdims=True)
    return out / (out.std(axis=(-2, -1), keepdims=True) + 1e-6)


def _triangle_wave(t: np.ndarray) -> np.ndarray:
    """Period 2*pi, range [-1, 1]; a zigzag counterpart of sin."""
    return 2.0 * np.abs(2.0 * ((t / (2 * np.pi)) % 1.0) - 1.0) - 1.0


def _texture_field(
    name: str, u: np.ndarray, v: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """A signed pattern value; the sign decides foreground vs background (before softening)."""
    size = u.shape[-1]
    omega = (np.pi * rng.uniform(2.5, 6.0, (n, 1, 1))).astype(np.float32)  # 2.5-6 cycles/image
    p1 = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    p2 = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    if name == "stripes":
        return np.sin(omega * u + p1)
    if name == "checker":
        return np.sin(omega * u + p1) * np.sin(omega * v + p2)
    if name == "dots":
        return (
            np.cos(omega * u + p1)
            + np.cos(omega * v + p2)
            - rng.uniform(0.6, 1.2, (n, 1, 1)).astype(np.float32)
        )
    if name == "waves":
        amp = rng.uniform(1.5, 3.0, (n, 1, 1)).astype(np.float32)
        return np.sin(omega * u + amp * np.sin(0.5 * omega * v + p2) + p1)
    if name == "zigzag":
        amp = rng.uniform(1.5, 3.0, (n, 1, 1)).astype(np.float32)
        return np.sin(omega * u + amp * _triangle_wave(0.6 * omega * v + p2) + p1)
    if name == "plaid":  # two crossing stripe sets of different frequency and weight
        ratio = rng.uniform(0.4, 0.7, (n, 1, 1)).astype(np.float32)
        return 0.6 * np.sin(omega * u + p1) + 0.4 * np.sin(ratio * omega * v + p2)
    if name == "rings":
        c = rng.uniform(-0.7, 0.7, (n, 2, 1, 1)).astype(np.float32)
        return np.sin(omega * np.hypot(u - c[:, 0], v - c[:, 1]) + p1)
    if name == "blobs":
        level = rng.uniform(-0.4, 0.4, (n, 1, 1)).astype(np.float32)
        return _smooth_noise((n, size, size), rng, sigma=size / 14) - level
    raise KeyError(name)


def textures(
    n_per_class: int,
    seed: int,
    size: int = 32,
    classes: ClassSpec = None,
    shift: DomainShift | None = None,
) -> Images:
    """Periodic and noise textures with random frequency, phase, orientation, edge and colours."""
    ids = resolve_classes(TEXTURE_CLASSES, classes)
    rng = _rng(seed, _STREAM["textures"])
    labels = _balanced_labels(len(ids), n_per_class, rng)
    n = len(labels)
    u, v, _ = _frames(n, size, rng, scale=(1.0, 1.0), jitter=0.5)
    field = np.empty((n, size, size), dtype=np.float32)
    for local, cls in enumerate(ids):
        sel = np.flatnonzero(labels == local)
        field[sel] = _texture_field(TEXTURE_CLASSES[cls], u[sel], v[sel], len(sel), rng)
    # random edge hardness: from soft sinusoid to near-binary pattern
    sharp = rng.uniform(0.8, 4.0, (n, 1, 1)).astype(np.float32)
    alpha = np.clip(0.5 + 0.5 * sharp * field, 0.0, 1.0)[..., None]
    fg, bg = _contrasting_colours(n, rng)
    img = bg[:, None, None, :] * (1 - alpha) + fg[:, None, None, :] * alpha
    img += 0.04 * rng.standard_normal(img.shape, dtype=np.float32)
    return _finish(
        _to_uint8(img), labels, [TEXTURE_CLASSES[i] for i in ids], shift, seed, _STREAM["textures"]
    )


# --------------------------------------------------------------------------------------------
# Fractals
# --------------------------------------------------------------------------------------------

FRACTAL_CLASSES = [
    "julia-dendrite",
    "julia-rabbit",
    "julia-spiral",
    "mandelbrot",
    "burning-ship",
    "tricorn",
    "sierpinski-triangle",
    "sierpinski-carpet",
]
# escape-time classes: (iteration kind, Julia constant or None, view centre, half-width range)
_ESCAPE = {
    "julia-dendrite": ("julia", 0.0 + 1.0j, 0.0 + 0.0j, (0.9, 1.5)),
    "julia-rabbit": ("julia", -0.123 + 0.745j, 0.0 + 0.0j, (0.9, 1.5)),
    "julia-spiral": ("julia", -0.8 + 0.156j, 0.0 + 0.0j, (0.8, 1.5)),
    "mandelbrot": ("mandelbrot", None, -0.6 + 0.0j, (0.9, 1.6)),
    "burning-ship": ("ship", None, -0.45 - 0.5j, (1.0, 1.7)),
    "tricorn": ("tricorn", None, -0.2 + 0.0j, (1.0, 1.7)),
}
_MAX_ITER = 32


def _escape_time(
    zr: np.ndarray, zi: np.ndarray, cr: np.ndarray, ci: np.ndarray, kind: str
) -> np.ndarray:
    """Smooth escape time in [0, 1) (1 = never escaped) for flat float32 arrays.

    Escaped pixels are dropped from the working set every few iterations, so the cost follows
    the number of pixels still iterating rather than batch x iterations.
    """
    out = np.ones(zr.shape, dtype=np.float32)
    idx = np.arange(zr.size)
    live = np.ones(zr.shape, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        for it in range(_MAX_ITER):
            zr2, zi2 = zr * zr, zi * zi
            mod2 = zr2 + zi2
            esc = live & (mod2 > 16.0)
            if esc.any():
                # fractional iteration count keeps the colouring smooth instead of banded
                nu = it + 1.0 - np.log2(np.log2(mod2[esc]) / 2.0)
                out[idx[esc]] = np.clip(nu / _MAX_ITER, 0.0, 0.999)
                live &= ~esc
            if it % 4 == 3:
                idx, zr, zi, cr, ci, zr2, zi2 = (a[live] for a in (idx, zr, zi, cr, ci, zr2, zi2))
                live = np.ones(idx.shape, dtype=bool)
                if idx.size == 0:
                    break
            cross = 2.0 * zr * zi
            if kind == "ship":
                cross = np.abs(cross)
            elif kind == "tricorn":
                cross = -cross
            zr, zi = zr2 - zi2 + cr, cross + ci
    return out


def _ifs_depth(name: str, u: np.ndarray, v: np.ndarray, levels: int = 5) -> np.ndarray:
    """Depth at which a point is removed from a Sierpinski gasket/carpet (1.0 = never removed).

    Digit tests on base-2 / base-3 coordinates: a point leaves the gasket at the first level where
    both binary digits are 1, and the carpet where both ternary digits are 1. Points outside the
    unit square count as removed at depth 0 (background).
    """
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    base = 2 if name == "sierpinski-triangle" else 3
    top = base**levels
    iu = np.clip(u * top, 0, top - 1).astype(np.int32)
    iv = np.clip(v * top, 0, top - 1).astype(np.int32)
    depth = np.ones(u.shape, dtype=np.float32)
    for level in range(levels, 0, -1):  # coarse levels last so they win
        step = base ** (levels - level)
        removed = ((iu // step) % base == 1) & ((iv // step) % base == 1)
        depth[removed] = (level - 1) / levels
    depth[~inside] = 0.0
    return depth


def fractals(
    n_per_class: int,
    seed: int,
    size: int = 32,
    classes: ClassSpec = None,
    shift: DomainShift | None = None,
) -> Images:
    """Escape-time fractals (three Julia sets, Mandelbrot, burning ship, tricorn) and IFS fractals.

    Each example gets a random zoom, offset, rotation and a random three-colour palette over its
    smooth escape time (or removal depth for the Sierpinski gasket and carpet).
    """
    ids = resolve_classes(FRACTAL_CLASSES, classes)
    rng = _rng(seed, _STREAM["fractals"])
    labels = _balanced_labels(len(ids), n_per_class, rng)
    n = len(labels)
    u, v, _ = _frames(n, size, rng, scale=(1.0, 1.0), jitter=0.0)
    zoom = rng.uniform(0.0, 1.0, (n, 1, 1)).astype(np.float32)
    offset = rng.uniform(-1.0, 1.0, (n, 2, 1, 1)).astype(np.float32)
    values = np.empty((n, size, size), dtype=np.float32)
    for local, cls in enumerate(ids):
        name = FRACTAL_CLASSES[cls]
        sel = np.flatnonzero(labels == local)
        us, vs, zs, off = u[sel], v[sel], zoom[sel], offset[sel]
        if name in _ESCAPE:
            kind, const, centre, (lo, hi) = _ESCAPE[name]
            half = lo + (hi - lo) * zs
            x = centre.real + 0.25 * half * off[:, 0] + half * us
            y = centre.imag + 0.25 * half * off[:, 1] + half * vs
            if kind == "julia":
                assert const is not None  # every Julia set names its constant
                jitter = rng.normal(0.0, 0.01, (len(sel), 2, 1, 1)).astype(np.float32)
                cr = np.broadcast_to(const.real + jitter[:, 0], x.shape)
                ci = np.broadcast_to(const.imag + jitter[:, 1], x.shape)
                zr, zi = x, y
            else:  # parameter-plane fractals start from z1 = c
                cr, ci, zr, zi = x, y, x, y
            fzr, fzi, fcr, fci = (
                np.ascontiguousarray(a, dtype=np.float32).ravel() for a in (zr, zi, cr, ci)
            )
            values[sel] = _escape_time(fzr, fzi, fcr, fci, kind).reshape(x.shape)
        else:
            w = 0.55 + 0.45 * (1 - zs)  # fraction of the unit square in view
            fu = 0.5 + 0.5 * w * us + 0.15 * off[:, 0]
            fv = 0.5 + 0.5 * w * vs + 0.15 * off[:, 1]
            values[sel] = _ifs_depth(name, fu, fv)
    # palette: background -> mid -> highlight along the value, with a random gamma
    cols = rng.uniform(0.0, 1.0, (n, 3, 3)).astype(np.float32)
    cols[:, 0] *= 0.5  # darker background end
    gamma = rng.uniform(0.5, 1.5, (n, 1, 1)).astype(np.float32)
    t = (values**gamma)[..., None]
    lower = cols[:, None, None, 0] * (1 - 2 * t) + cols[:, None, None, 1] * (2 * t)
    upper = cols[:, None, None, 1] * (2 - 2 * t) + cols[:, None, None, 2] * (2 * t - 1)
    img = np.where(t < 0.5, lower, upper)
    img += 0.02 * rng.standard_normal(img.shape, dtype=np.float32)
    return _finish(
        _to_uint8(img), labels, [FRACTAL_CLASSES[i] for i in ids], shift, seed, _STREAM["fractals"]
    )


# --------------------------------------------------------------------------------------------
# Real handwritten digits
# --------------------------------------------------------------------------------------------


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` matrix of 1-D bilinear resampling (pixel-centre aligned, edges clamped).

    Resizing a batch is then two small matrix products, far cheaper than per-image zooms.
    """
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = src - i0
    m = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - w)
    np.add.at(m, (rows, i1), w)
    return m


def _upsample_exact(levels: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of integer images (0-16) in exact integer arithmetic, as float64 in
    [0, 1].

    Every bilinear weight is a multiple of ``1 / (2 size)`` (:func:`bilinear_matrix`), so the
    products sum exactly in int64, in any order; the one division is correctly rounded. A float
    matrix product instead sums in whatever order the BLAS picks for the machine and its thread
    count, and a pixel that lands on a rounding tie of the uint8 conversion came out differently
    on two threads than on one: the data themselves depended on the machine.
    """
    scale = 2 * size
    weights = np.rint(bilinear_matrix(levels.shape[-1], size) * scale).astype(np.int64)
    up = np.einsum("oi,nij,pj->nop", weights, levels.astype(np.int64), weights)
    out: np.ndarray = up / float(16 * scale * scale)
    return out


def digits(
    seed: int,
    size: int = 32,
    classes: Sequence[int] | None = None,
    shift: DomainShift | None = None,
) -> Images:
    """scikit-learn's 1,797 real handwritten 8x8 digits, bilinearly upsampled to RGB uint8.

    ``classes`` keeps only those digits, re-indexed ``0..k-1`` in the order given. These are real
    data in scikit-learn's order, so the seed only drives the shift's randomness; splitting and
    subsampling are the caller's job. Classes are as balanced as the data (about 180 each).
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    target = data.target.astype(np.int64)
    wanted = list(range(10)) if classes is None else [int(c) for c in classes]
    if len(wanted) < 2 or len(set(wanted)) != len(wanted) or not all(0 <= c <= 9 for c in wanted):
        raise ValueError(
            f"digit classes must be at least two distinct digits in 0..9, got {wanted}"
        )
    lookup = np.full(10, -1, dtype=np.int64)
    lookup[wanted] = np.arange(len(wanted))
    keep = lookup[target] >= 0
    images = np.repeat(_to_uint8(_upsample_exact(data.images[keep], size))[..., None], 3, axis=-1)
    return _finish(
        images, lookup[target[keep]], [str(d) for d in wanted], shift, seed, _STREAM["digits"]
    )


# --------------------------------------------------------------------------------------------
# Topic text
# --------------------------------------------------------------------------------------------


# Per topic: nouns, verbs (past tense) and adjectives. No word is shared between topics, and each
# list is long, so a handful of labelled examples covers few of the cue words a test sentence uses
# while a pre-trained encoder still knows that "goalkeeper" and "playoffs" are both about sport.
def _w(text: str) -> list[str]:
    """Split a whitespace-separated word list (keeps the long vocabularies readable)."""
    return text.split()


TOPICS: dict[str, dict[str, list[str]]] = {
    "sports": {
        "n": _w("""striker goalkeeper referee stadium tournament championship league playoffs
            midfielder quarterback marathon sprinter athlete coach penalty touchdown scoreboard
            racket basketball football hockey rugby cricket batsman pitcher innings overtime
            halftime trophy podium relay hurdles umpire golfer wrestler boxer jersey teammates
            defender tackle"""),
        "v": _w("""scored tackled sprinted dribbled qualified defeated equalised trained
            outplayed substituted benched relegated"""),
        "a": _w("""athletic defensive unbeaten competitive olympic varsity offside undefeated
            sporting"""),
    },
    "cooking": {
        "n": _w("""recipe oven saucepan skillet garlic onions flour butter dough broth spices
            marinade whisk pastry casserole ladle cinnamon oregano parsley risotto omelette
            batter yeast vinegar spatula colander chef stew soup noodles dumplings crust
            tablespoon teaspoon cutlet sauce"""),
        "v": _w("""simmered baked roasted sauteed chopped whisked kneaded seasoned grilled
            marinated braised garnished"""),
        "a": _w("""savoury crispy tender spicy creamy buttery delicious caramelised
            homemade"""),
    },
    "weather": {
        "n": _w("""forecast rain thunderstorm humidity snowfall temperatures breeze clouds
            drizzle sunshine hurricane frost meteorologist showers heatwave fog gusts blizzard
            umbrella hail drought tornado monsoon sleet lightning thunder rainfall barometer
            downpour typhoon cyclone snowstorm dew mist"""),
        "v": _w("""drizzled poured thundered snowed froze thawed flooded cleared gusted
            hailed"""),
        "a": _w("""humid chilly stormy foggy sunny overcast windy icy rainy muggy cloudy
            freezing"""),
    },
    "finance": {
        "n": _w("""stocks investors dividend inflation portfolio shares bonds earnings
            banking currency revenue mortgage savings economy profit trading loan taxes audit
            shareholders recession bankruptcy accountant equity hedge creditors assets
            liabilities pension brokerage payroll invoice fiscal quarterly stockbroker
            """),
        "v": _w("""invested rallied plunged borrowed audited refinanced diversified traded
            defaulted depreciated"""),
        "a": _w("""financial monetary bullish bearish taxable profitable lucrative insolvent
            economic"""),
    },
    "travel": {
        "n": _w("""flight passport itinerary hotel luggage tourists airport vacation
            sightseeing cruise museum backpacking resort journey destination visa suitcase
            souvenir ferry hostel boarding terminal guidebook excursion layover jetlag
            sightseers airline departures customs landmarks holidaymakers embassy
            campsite"""),
        "v": _w("""flew toured booked checked embarked departed backpacked sailed explored
            landed"""),
        "a": _w("""scenic touristy overseas exotic international coastal remote
            picturesque"""),
    },
    "health": {
        "n": _w("""doctor vaccine symptoms clinic patients hospital nurse therapy infection
            medicine bloodstream fitness vitamins surgery diagnosis allergy wellness
            prescription physician antibiotics cardiologist pharmacy illness fever cholesterol
            diabetes immunity checkup dentist paramedic ambulance surgeon nutrition
            """),
        "v": _w("""diagnosed vaccinated prescribed treated recovered operated examined
            immunised hospitalised healed"""),
        "a": _w("""medical clinical chronic contagious healthy feverish surgical
            nutritious"""),
    },
    "technology": {
        "n": _w("""software smartphone laptop processor algorithm startup internet app
            server robot microchip programmers battery network database browser gadget
            encryption firmware keyboard cybersecurity bandwidth router semiconductor
            developers chatbot touchscreen hardware spreadsheet computer website
            download"""),
        "v": _w("""coded debugged installed rebooted uploaded encrypted programmed hacked
            downloaded upgraded"""),
        "a": _w("""digital wireless electronic automated online technological
            computational virtual"""),
    },
    "music": {
        "n": _w("""guitar concert album singer melody drummer orchestra lyrics band piano
            chorus jazz symphony song rhythm violin playlist rapper tune choir saxophone
            cello trumpet harmony conductor soprano ballad gig guitarist pianist bassist
            vinyl composer encore"""),
        "v": _w("""sang strummed composed rehearsed performed harmonised drummed recorded
            serenaded remixed"""),
        "a": _w("""musical melodic acoustic orchestral rhythmic lyrical tuneful
            symphonic"""),
    },
}
_NEUTRAL_NOUNS = _w("""friend neighbour cousin colleague family group teacher student manager
    reporter crowd everyone somebody town city office weekend morning evening afternoon""")
_OPENERS = [
    "apparently",
    "honestly",
    "last weekend",
    "this morning",
    "on the news",
    "as usual",
    "for some reason",
    "yesterday",
    "earlier today",
    "to be fair",
    "my friend said",
    "according to my neighbour",
    "believe it or not",
    "i heard that",
    "once again",
]
_CLOSERS = [
    "again",
    "as expected",
    "last night",
    "this week",
    "all day",
    "for hours",
    "in the end",
    "to everyone's surprise",
    "before lunch",
    "after work",
    "once more",
    "without any fuss",
    "near the city centre",
    "or so they say",
    "at the weekend",
]
# {N} topic noun, {V} topic verb, {A} topic adjective, {P} neutral noun, {O} opener, {C} closer
_CLAUSES = [
    "{O} the {A} {N} {V} {C}",
    "the {N} and the {N} {V} {C}",
    "my {P} talked about the {A} {N} {C}",
    "{O} our {P} {V} near the {N}",
    "everyone was talking about the {N} and the {A} {N}",
    "{O} the {N} seemed really {A}",
    "we {V} with the {N} {C}",
    "a {A} {N} {V} while the {P} waited",
    "the {P} said the {N} was {A}",
    "nobody expected the {N} to be so {A} {C}",
]


def _half(words: list[str], vocabulary: str) -> list[str]:
    """All of a cue list, or its even-indexed ("first") or odd-indexed ("second") half."""
    if vocabulary == "all":
        return words
    return words[0::2] if vocabulary == "first" else words[1::2]


def _vocab(vocabulary: str) -> dict[str, dict[str, list[str]]]:
    return {t: {k: _half(w, vocabulary) for k, w in parts.items()} for t, parts in TOPICS.items()}


def _sentence(
    topic: str,
    others: list[str],
    rnd: random.Random,
    distract: float,
    vocab: dict[str, dict[str, list[str]]] | None = None,
) -> list[str]:
    """One text of 8-25 words with at least two on-topic cues outnumbering the distractors."""
    topics = TOPICS if vocab is None else vocab
    every_cue = (
        _ALL_CUES if vocab is None else {w for p in vocab.values() for ws in p.values() for w in ws}
    )
    while True:
        target = rnd.randint(8, 25)
        words: list[str] = []
        on_topic = off_topic = 0
        while len(words) < target:
            for slot in rnd.choice(_CLAUSES).split():
                if slot in ("{N}", "{V}", "{A}"):
                    key = slot[1].lower()
                    if rnd.random() < distract:
                        words.append(rnd.choice(topics[rnd.choice(others)][key]))
                        off_topic += 1
                    else:
                        words.append(rnd.choice(topics[topic][key]))
                        on_topic += 1
                elif slot == "{P}":
                    words.append(rnd.choice(_NEUTRAL_NOUNS))
                elif slot == "{O}":
                    words.extend(rnd.choice(_OPENERS).split())
                elif slot == "{C}":
                    words.extend(rnd.choice(_CLOSERS).split())
                else:
                    words.append(slot)
        words = words[:25]
        cues = set(topics[topic]["n"]) | set(topics[topic]["v"]) | set(topics[topic]["a"])
        on_topic = sum(w in cues for w in words)
        off_topic = sum(w in every_cue and w not in cues for w in words)
        if on_topic >= 2 and on_topic > off_topic:
            return words


_ALL_CUES = {w for parts in TOPICS.values() for words in parts.values() for w in words}


def topic_text(
    n_per_class: int,
    seed: int,
    classes: ClassSpec = None,
    label_noise: float = 0.0,
    vocabulary: str = "all",
) -> tuple[list[str], np.ndarray, list[str]]:
    """Short generated sentences (8-25 words) about topics, for text transfer studies.

    Sentences mix topic cue words (nouns, verbs, adjectives drawn from ~50 real English words per
    topic) with neutral clauses, and about one cue in seven is a distractor from another topic.
    ``label_noise`` flips exactly ``round(label_noise * N)`` labels, each to a uniformly chosen
    other class; the texts keep their true topic. ``vocabulary`` "first" or "second" draws every
    cue from one half of each list (even- or odd-indexed words): two tasks on different halves
    share the topics but no cue word, a domain shift with a known direction.
    """
    if vocabulary not in ("all", "first", "second"):
        raise ValueError(f"vocabulary must be all, first or second, got {vocabulary!r}")
    vocab = None if vocabulary == "all" else _vocab(vocabulary)
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must be in [0, 1), got {label_noise}")
    names = list(TOPICS)
    ids = resolve_classes(names, classes)
    rng = _rng(seed, _STREAM["text"])
    labels = _balanced_labels(len(ids), n_per_class, rng)
    rnd = random.Random(int(rng.integers(2**63)))  # fast, platform-independent per-word draws
    texts = []
    for label in labels:
        topic = names[ids[label]]
        others = [t for t in names if t != topic]
        texts.append(" ".join(_sentence(topic, others, rnd, 0.15, vocab)))
    labels = flip_labels(labels, label_noise, len(ids), rng)
    return texts, labels.astype(np.int64), [names[i] for i in ids]


def flip_labels(
    labels: np.ndarray, fraction: float, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Flip exactly ``round(fraction * N)`` labels, each to a uniformly chosen *other* class."""
    labels = np.array(labels, dtype=np.int64)
    n_flip = round(fraction * len(labels))
    if n_flip:
        flip = rng.choice(len(labels), size=n_flip, replace=False)
        labels[flip] = (labels[flip] + rng.integers(1, num_classes, n_flip)) % num_classes
    return labels


# --------------------------------------------------------------------------------------------
# Families by name
# --------------------------------------------------------------------------------------------

IMAGE_FAMILIES: dict[str, Callable[..., Images]] = {
    "shapes": shapes,
    "textures": textures,
    "fractals": fractals,
}
