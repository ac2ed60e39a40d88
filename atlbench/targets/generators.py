"""Deterministic offline data: real handwritten digits, procedural images, generated topic text.

Everything is numpy, seeded with ``np.random.default_rng(seed)``: the same seed gives the same bytes,
so built-in targets and zoo pre-training are reproducible on any machine without downloads.
Images are uint8 ``[N, size, size, 3]``; labels int64; class names align with label ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Images = tuple[np.ndarray, np.ndarray, list[str]]


@dataclass(frozen=True)
class DomainShift:
    """A controllable domain shift applied after generation.

    ``colour``: "swap" permutes RGB channels (R->G->B->R), "grey" removes colour, "warm"/"cool"
    tint the whole image. ``rotation`` rotates every image by that many degrees (or by a uniform
    angle in +-rotation when ``random_rotation``). ``noise`` is the Gaussian std in [0, 1] pixel
    units; ``blur`` the Gaussian blur sigma in pixels. ``label_permutation`` is the seed of a
    permutation of class ids (None = identity): the same inputs, different label semantics.
    """

    rotation: float = 0.0
    random_rotation: bool = False
    invert: bool = False
    colour: str | None = None
    noise: float = 0.0
    blur: float = 0.0
    label_permutation: int | None = None


COLOUR_SHIFTS = ("swap", "grey", "warm", "cool")


def apply_shift(
    images: np.ndarray, labels: np.ndarray, shift: DomainShift | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``shift`` to uint8 images (N, H, W, 3) and int labels; returns new arrays."""
    if shift is None:
        return images, labels
    x = images.astype(np.float32) / 255.0
    if shift.rotation:
        angles = (
            rng.uniform(-shift.rotation, shift.rotation, len(x))
            if shift.random_rotation
            else np.full(len(x), shift.rotation)
        )
        x = np.stack(
            [ndimage.rotate(img, a, axes=(0, 1), reshape=False, order=1, mode="nearest")
             for img, a in zip(x, angles, strict=True)]
        )
    if shift.blur:
        x = ndimage.gaussian_filter(x, sigma=(0, shift.blur, shift.blur, 0))
    if shift.colour is not None:
        if shift.colour not in COLOUR_SHIFTS:
            raise ValueError(f"unknown colour shift {shift.colour!r} (choose from {COLOUR_SHIFTS})")
        if shift.colour == "swap":
            x = x[..., [2, 0, 1]]
        elif shift.colour == "grey":
            x = np.repeat(x.mean(-1, keepdims=True), 3, axis=-1)
        else:
            tint = np.array([1.0, 0.85, 0.6] if shift.colour == "warm" else [0.6, 0.85, 1.0])
            x = x * tint
    if shift.invert:
        x = 1.0 - x
    if shift.noise:
        x = x + rng.normal(0.0, shift.noise, x.shape)
    out = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    if shift.label_permutation is not None:
        k = int(labels.max()) + 1
        perm = np.random.default_rng(shift.label_permutation).permutation(k)
        labels = perm[labels]
    return out, labels.astype(np.int64)


def _class_subset(names: list[str], classes: int | list | None) -> list[int]:
    if classes is None:
        return list(range(len(names)))
    if isinstance(classes, int):
        if not 2 <= classes <= len(names):
            raise ValueError(f"classes must be between 2 and {len(names)}")
        return list(range(classes))
    out = []
    for c in classes:
        if isinstance(c, str):
            if c not in names:
                raise ValueError(f"unknown class {c!r} (choose from {', '.join(names)})")
            out.append(names.index(c))
        else:
            if not 0 <= int(c) < len(names):
                raise ValueError(f"class id {c} out of range 0..{len(names) - 1}")
            out.append(int(c))
    if len(set(out)) != len(out) or len(out) < 2:
        raise ValueError("classes must be at least two distinct classes")
    return out


def _grid(size: int, n: int, rng: np.random.Generator, jitter: float = 0.25) -> tuple[np.ndarray, ...]:
    """Per-example coordinates centred on a random position with a random scale and rotation."""
    lin = np.linspace(-1.0, 1.0, size)
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    cx = rng.uniform(-jitter, jitter, (n, 1, 1))
    cy = rng.uniform(-jitter, jitter, (n, 1, 1))
    scale = rng.uniform(0.45, 0.8, (n, 1, 1))
    theta = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    x, y = (xx[None] - cx) / scale, (yy[None] - cy) / scale
    c, s = np.cos(theta), np.sin(theta)
    return x * c - y * s, x * s + y * c, scale


def _shape_mask(name: str, x: np.ndarray, y: np.ndarray, width: np.ndarray) -> np.ndarray:
    r = np.hypot(x, y)
    ang = np.arctan2(y, x)
    if name == "circle":
        return r <= 0.8
    if name == "ring":
        return np.abs(r - 0.7) <= width
    if name == "square":
        return np.maximum(np.abs(x), np.abs(y)) <= 0.7
    if name == "diamond":
        return np.abs(x) + np.abs(y) <= 0.85
    if name == "triangle":
        return (y <= 0.6) & (y >= -0.6 + 2 * np.abs(x) * 0.9 - 0.5)
    if name == "cross":
        return ((np.abs(x) <= width) | (np.abs(y) <= width)) & (np.maximum(np.abs(x), np.abs(y)) <= 0.85)
    if name == "star":
        return r <= 0.45 + 0.35 * np.cos(5 * ang) ** 2
    if name == "bar":
        return (np.abs(y) <= width * 1.3) & (np.abs(x) <= 0.9)
    raise KeyError(name)


SHAPE_CLASSES = ["circle", "square", "triangle", "cross", "ring", "star", "diamond", "bar"]
TEXTURE_CLASSES = ["stripes", "checker", "dots", "waves", "zigzag", "plaid", "blobs", "rings"]
FRACTAL_CLASSES = ["julia-dendrite", "julia-rabbit", "julia-siegel", "mandelbrot-edge",
                   "burning-ship", "sierpinski", "carpet", "tricorn"]


def _colours(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background colours with guaranteed contrast."""
    fg = rng.uniform(0.0, 1.0, (n, 3))
    bg = rng.uniform(0.0, 1.0, (n, 3))
    too_close = np.abs(fg.mean(1) - bg.mean(1)) < 0.3
    bg[too_close] = 1.0 - fg[too_close]
    return fg, bg


def _compose(mask: np.ndarray, fg: np.ndarray, bg: np.ndarray, rng: np.random.Generator,
             clutter: float = 0.08) -> np.ndarray:
    """Blend a soft mask into colours, add mild clutter noise; uint8 output."""
    m = mask.astype(np.float32)[..., None]
    img = m * fg[:, None, None, :] + (1 - m) * bg[:, None, None, :]
    img = img + rng.normal(0, clutter, img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _balanced_labels(ids: list[int], n_per_class: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.repeat(np.arange(len(ids)), n_per_class)
    return labels[rng.permutation(len(labels))]


def shapes(n_per_class: int, seed: int, size: int = 32, classes: int | list | None = None,
           shift: DomainShift | None = None) -> Images:
    """Geometric shapes at random position, scale, rotation, thickness and colours."""
    rng = np.random.default_rng([seed, 1])
    ids = _class_subset(SHAPE_CLASSES, classes)
    labels = _balanced_labels(ids, n_per_class, rng)
    x, y, _ = _grid(size, len(labels), rng)
    width = rng.uniform(0.12, 0.25, (len(labels), 1, 1))
    mask = np.zeros(x.shape, dtype=bool)
    for local, cls in enumerate(ids):
        sel = labels == local
        mask[sel] = _shape_mask(SHAPE_CLASSES[cls], x[sel], y[sel], width[sel])
    # clutter: a few random specks so the background is not blank
    specks = rng.random(mask.shape) < 0.02
    fg, bg = _colours(len(labels), rng)
    images = _compose(mask ^ specks, fg, bg, rng)
    images, labels = apply_shift(images, labels, shift, rng)
    return images, labels, [SHAPE_CLASSES[i] for i in ids]


def _texture(name: str, x: np.ndarray, y: np.ndarray, freq: np.ndarray, phase: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    f = freq * np.pi
    if name == "stripes":
        v = np.sin(f * x + phase)
    elif name == "checker":
        v = np.sin(f * x + phase) * np.sin(f * y + phase)
    elif name == "dots":
        v = np.cos(f * x + phase) + np.cos(f * y + phase) - 1.0
    elif name == "waves":
        v = np.sin(f * x + 2.0 * np.sin(0.5 * f * y) + phase)
    elif name == "zigzag":
        v = np.sin(f * y + 3.0 * np.abs(((x * freq * 0.5) % 2) - 1) * 2 + phase)
    elif name == "plaid":
        v = np.sin(f * x + phase) + np.sin(0.5 * f * y) - 0.5
    elif name == "rings":
        v = np.sin(f * np.hypot(x, y) * 1.5 + phase)
    elif name == "blobs":
        noise = rng.normal(size=x.shape)
        v = ndimage.gaussian_filter(noise, sigma=(0, 2.0, 2.0))
        v = v / (v.std(axis=(1, 2), keepdims=True) + 1e-9) - 0.3
    else:
        raise KeyError(name)
    return v > 0


def textures(n_per_class: int, seed: int, size: int = 32, classes: int | list | None = None,
             shift: DomainShift | None = None) -> Images:
    """Periodic and noise textures with random frequency, phase, orientation and colours."""
    rng = np.random.default_rng([seed, 2])
    ids = _class_subset(TEXTURE_CLASSES, classes)
    labels = _balanced_labels(ids, n_per_class, rng)
    n = len(labels)
    x, y, _ = _grid(size, n, rng, jitter=1.0)
    freq = rng.uniform(2.0, 4.0, (n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    mask = np.zeros(x.shape, dtype=bool)
    for local, cls in enumerate(ids):
        sel = labels == local
        mask[sel] = _texture(TEXTURE_CLASSES[cls], x[sel], y[sel], freq[sel], phase[sel], rng)
    fg, bg = _colours(n, rng)
    images = _compose(mask, fg, bg, rng, clutter=0.1)
    images, labels = apply_shift(images, labels, shift, rng)
    return images, labels, [TEXTURE_CLASSES[i] for i in ids]


_JULIA_C = {
    "julia-dendrite": (0.0, 1.0),
    "julia-rabbit": (-0.123, 0.745),
    "julia-siegel": (-0.391, -0.587),
}


def _escape(z: np.ndarray, c: np.ndarray, power: str, iters: int = 24) -> np.ndarray:
    """Vectorised escape-time iteration over the whole batch; returns normalised counts."""
    count = np.zeros(z.shape, dtype=np.float32)
    alive = np.ones(z.shape, dtype=bool)
    for _ in range(iters):
        if power == "ship":
            z = (np.abs(z.real) + 1j * np.abs(z.imag)) ** 2 + c
        elif power == "tricorn":
            z = np.conj(z) ** 2 + c
        else:
            z = z * z + c
        z = np.where(alive, z, 0)
        escaped = np.abs(z) > 2.0
        alive &= ~escaped
        count += alive
    return count / iters


def _ifs_mask(name: str, x: np.ndarray, y: np.ndarray, levels: int = 4) -> np.ndarray:
    """Sierpinski triangle / carpet by digit tests on base-2 / base-3 coordinates."""
    u = np.clip((x + 1) / 2, 0, 0.9999)
    v = np.clip((y + 1) / 2, 0, 0.9999)
    keep = np.ones(x.shape, dtype=bool)
    base = 2 if name == "sierpinski" else 3
    for level in range(1, levels + 1):
        du = np.floor(u * base**level) % base
        dv = np.floor(v * base**level) % base
        if name == "sierpinski":
            keep &= ~((du == 1) & (dv == 1))
        else:
            keep &= ~((du == 1) & (dv == 1))
    if name == "sierpinski":
        keep &= ((np.floor(u * 16).astype(int) & np.floor(v * 16).astype(int)) == 0)
    return keep


def fractals(n_per_class: int, seed: int, size: int = 32, classes: int | list | None = None,
             shift: DomainShift | None = None) -> Images:
    """Escape-time (Julia, Mandelbrot, burning ship, tricorn) and IFS fractals, random zoom/palette."""
    rng = np.random.default_rng([seed, 3])
    ids = _class_subset(FRACTAL_CLASSES, classes)
    labels = _balanced_labels(ids, n_per_class, rng)
    n = len(labels)
    x, y, _ = _grid(size, n, rng, jitter=0.3)
    zoom = rng.uniform(1.1, 1.6, (n, 1, 1))
    values = np.zeros(x.shape, dtype=np.float32)
    for local, cls in enumerate(ids):
        sel = labels == local
        name = FRACTAL_CLASSES[cls]
        zx, zy = x[sel] * zoom[sel], y[sel] * zoom[sel]
        if name in _JULIA_C:
            c = complex(*_JULIA_C[name]) + rng.normal(0, 0.02, (int(sel.sum()), 1, 1))
            values[sel] = _escape(zx + 1j * zy, c, "square")
        elif name == "mandelbrot-edge":
            c = (zx * 0.6 - 0.75) + 1j * (zy * 0.6 + 0.1)
            values[sel] = _escape(np.zeros_like(c), c, "square")
        elif name == "burning-ship":
            c = (zx * 0.9 - 0.4) + 1j * (zy * 0.9 - 0.5)
            values[sel] = _escape(np.zeros_like(c), c, "ship")
        elif name == "tricorn":
            c = zx * 1.1 + 1j * zy * 1.1
            values[sel] = _escape(np.zeros_like(c), c, "tricorn")
        else:
            values[sel] = _ifs_mask(name, x[sel], y[sel]).astype(np.float32)
    # a random two-colour palette per example over the escape counts
    fg, bg = _colours(n, rng)
    images = _compose(values, fg, bg, rng, clutter=0.06)
    images, labels = apply_shift(images, labels, shift, rng)
    return images, labels, [FRACTAL_CLASSES[i] for i in ids]


def digits(seed: int, size: int = 32, classes: list[int] | None = None,
           shift: DomainShift | None = None) -> Images:
    """scikit-learn's 1,797 real handwritten 8x8 digits, upsampled (bilinear) to RGB uint8.

    ``classes`` keeps those digits, re-indexed 0..k-1 in the given order. The seed only drives
    the shift's randomness: the images themselves are the real data.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    raw, target = data.images.astype(np.float32) / 16.0, data.target.astype(np.int64)
    wanted = list(range(10)) if classes is None else [int(c) for c in classes]
    if len(set(wanted)) != len(wanted) or any(not 0 <= c <= 9 for c in wanted) or len(wanted) < 2:
        raise ValueError("digits classes must be at least two distinct digits in 0..9")
    keep = np.isin(target, wanted)
    raw, target = raw[keep], target[keep]
    remap = {d: i for i, d in enumerate(wanted)}
    labels = np.array([remap[int(t)] for t in target], dtype=np.int64)
    zoom = size / 8.0
    up = ndimage.zoom(raw, (1, zoom, zoom), order=1)
    up = np.clip(up, 0, 1)
    images = np.clip(np.rint(np.repeat(up[..., None], 3, axis=-1) * 255), 0, 255).astype(np.uint8)
    images, labels = apply_shift(images, labels, shift, np.random.default_rng([seed, 4]))
    return images, labels, [str(d) for d in wanted]


TOPICS: dict[str, list[str]] = {
    "sports": ["football", "striker", "goalkeeper", "tournament", "championship", "referee",
               "stadium", "match", "league", "coach", "athletes", "marathon", "tennis", "basketball",
               "penalty", "scored", "playoffs", "sprinter", "medal", "olympic", "team", "season"],
    "cooking": ["recipe", "oven", "simmer", "garlic", "onions", "saucepan", "bake", "flour",
                "butter", "seasoning", "roast", "skillet", "chopped", "dough", "broth", "spices",
                "dessert", "marinade", "whisk", "pastry", "grill", "kitchen"],
    "weather": ["forecast", "rain", "thunderstorm", "humidity", "snowfall", "temperatures",
                "breeze", "clouds", "drizzle", "sunshine", "hurricane", "frost", "meteorologist",
                "showers", "heatwave", "fog", "gusts", "blizzard", "climate", "umbrella", "hail"],
    "finance": ["stocks", "investors", "dividend", "inflation", "portfolio", "shares", "bond",
                "earnings", "market", "interest", "banking", "currency", "budget", "revenue",
                "mortgage", "savings", "economy", "profit", "trading", "loan", "tax", "audit"],
    "travel": ["flight", "passport", "itinerary", "hotel", "luggage", "tourists", "airport",
               "vacation", "sightseeing", "beach", "cruise", "museum", "backpacking", "resort",
               "train", "journey", "destination", "visa", "suitcase", "souvenir", "ferry"],
    "health": ["doctor", "vaccine", "symptoms", "clinic", "patients", "diet", "exercise",
               "hospital", "nurse", "therapy", "infection", "medicine", "blood", "pressure",
               "fitness", "sleep", "vitamins", "surgery", "diagnosis", "allergy", "wellness"],
    "technology": ["software", "smartphone", "laptop", "processor", "algorithm", "startup",
                   "internet", "app", "cloud", "server", "robot", "chip", "programmers", "update",
                   "battery", "network", "database", "browser", "gadget", "encryption", "code"],
    "music": ["guitar", "concert", "album", "singer", "melody", "drummer", "orchestra", "lyrics",
              "band", "piano", "chorus", "jazz", "symphony", "song", "rhythm", "violin",
              "playlist", "rapper", "festival", "tune", "studio", "choir"],
}
_FILLER = ["the", "a", "this", "that", "some", "many", "our", "their", "today", "yesterday",
           "really", "quite", "very", "new", "old", "local", "big", "small", "people", "friends",
           "everyone", "week", "morning", "evening", "city", "town", "was", "were", "is", "seems",
           "felt", "looked", "about", "after", "before", "with", "without", "and", "but", "again"]
_TEMPLATES = [
    "{f} {f} {t} {f} {t} {f} {f}",
    "{f} {t} {f} {f} {t} {t} {f}",
    "{t} {f} {f} {t} {f} {f} {t} {f}",
    "{f} {f} {t} {f} {f} {f} {t}",
]


def topic_text(n_per_class: int, seed: int, classes: int | list | None = None,
               label_noise: float = 0.0) -> tuple[list[str], np.ndarray, list[str]]:
    """Short generated sentences about topics, with shared filler and distractor words.

    Topic words are drawn from a vocabulary of ~20 real English cue words per topic, so with a few
    examples per class a model trained from scratch has seen few test words, while a pre-trained
    encoder knows that "striker" and "playoffs" are both about sport. One word in six is a
    distractor from another topic. ``label_noise`` flips that fraction of labels to another class.
    """
    names = list(TOPICS)
    ids = _class_subset(names, classes)
    rng = np.random.default_rng([seed, 5])
    labels = _balanced_labels(ids, n_per_class, rng)
    texts = []
    for label in labels:
        topic = names[ids[label]]
        words: list[str] = []
        n_words = int(rng.integers(8, 26))
        while len(words) < n_words:
            template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
            for slot in template.split():
                if slot == "{t}":
                    if rng.random() < 1 / 6:
                        other = names[int(rng.integers(len(names)))]
                        words.append(str(rng.choice(TOPICS[other])))
                    else:
                        words.append(str(rng.choice(TOPICS[topic])))
                else:
                    words.append(str(rng.choice(_FILLER)))
        texts.append(" ".join(words[:n_words]))
    labels = labels.astype(np.int64)
    if label_noise > 0:
        flip = rng.random(len(labels)) < label_noise
        offset = rng.integers(1, len(ids), len(labels))
        labels = np.where(flip, (labels + offset) % len(ids), labels)
    return texts, labels, [names[i] for i in ids]


IMAGE_FAMILIES: dict[str, Callable[..., Images]] = {
    "shapes": shapes,
    "textures": textures,
    "fractals": fractals,
}
GENERATORS = IMAGE_FAMILIES
