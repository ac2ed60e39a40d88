"""Built-in offline generators: determinism, formats, shift semantics and task difficulty.

References are independent of the code under test: scipy's rotate, numpy's rot90, Pillow's bilinear
resize, scikit-learn's raw digits, and plain scikit-learn classifiers on fresh data.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from atlbench.targets import _generators as gen

FAMILIES = sorted(gen.IMAGE_FAMILIES)
SMALL = 16  # image side for fast tests


def _fresh_seed() -> int:
    return int(np.random.default_rng().integers(0, 2**31))


# ---------------------------------------------------------------- formats and determinism


@pytest.mark.parametrize("family", FAMILIES)
def test_image_family_format_balance_and_determinism(family: str) -> None:
    fn = gen.IMAGE_FAMILIES[family]
    seed = _fresh_seed()
    x, y, names = fn(7, seed, size=SMALL)
    assert x.shape == (7 * len(names), SMALL, SMALL, 3) and x.dtype == np.uint8
    assert y.dtype == np.int64 and y.shape == (len(x),)
    assert len(names) >= 6 and len(set(names)) == len(names)
    assert np.array_equal(np.bincount(y, minlength=len(names)), np.full(len(names), 7))
    assert x.std() > 10  # not blank
    x2, y2, names2 = fn(7, seed, size=SMALL)
    assert x.tobytes() == x2.tobytes() and np.array_equal(y, y2) and names == names2
    x3, _, _ = fn(7, seed + 1, size=SMALL)
    assert x.tobytes() != x3.tobytes()


@pytest.mark.parametrize("family", FAMILIES)
def test_class_selection_by_count_names_and_ids(family: str) -> None:
    fn = gen.IMAGE_FAMILIES[family]
    _, _, all_names = fn(1, 0, size=8)
    _, y, names = fn(3, 0, size=8, classes=3)
    assert names == all_names[:3] and set(y.tolist()) == {0, 1, 2}
    picked = [all_names[4], all_names[1]]
    _, y, names = fn(3, 0, size=8, classes=picked)
    assert names == picked and np.bincount(y).tolist() == [3, 3]
    assert fn(2, 0, size=8, classes=[5, 0])[2] == [all_names[5], all_names[0]]
    with pytest.raises(ValueError, match="unknown class"):
        fn(2, 0, size=8, classes=["nonsense", all_names[0]])
    with pytest.raises(ValueError):
        fn(2, 0, size=8, classes=1)


def test_families_and_builtin_shift_fields() -> None:
    from typing import get_args

    from atlbench.targets.builtin import CLASS_NAMES, Colour, ShiftParams

    assert {"shapes", "textures", "fractals"} <= set(gen.IMAGE_FAMILIES)
    assert set(get_args(Colour)) == set(gen.COLOUR_SHIFTS)  # the schema lists every colour shift
    for family, fn in gen.IMAGE_FAMILIES.items():  # class names known without generating
        assert fn(1, 0, size=8)[2] == CLASS_NAMES[family]
    # every field the suite schema accepts must construct a DomainShift
    params = ShiftParams(
        rotation=10, invert=True, colour="grey", noise=0.1, blur=1.0, label_permutation=3
    )
    assert gen.DomainShift(**params.model_dump()).colour == "grey"


# ---------------------------------------------------------------- shifts


def test_invert_is_exact_complement_of_unshifted_images() -> None:
    seed = _fresh_seed()
    for fn in gen.IMAGE_FAMILIES.values():
        x, y, names = fn(4, seed, size=SMALL)
        xi, yi, names_i = fn(4, seed, size=SMALL, shift=gen.DomainShift(invert=True))
        assert np.array_equal(xi, 255 - x) and np.array_equal(yi, y) and names_i == names


def test_zero_rotation_and_empty_shift_are_identity() -> None:
    seed = _fresh_seed()
    x, y, _ = gen.shapes(4, seed, size=SMALL)
    for shift in (gen.DomainShift(rotation=0.0), gen.DomainShift()):
        xs, ys, _ = gen.shapes(4, seed, size=SMALL, shift=shift)
        assert np.array_equal(xs, x) and np.array_equal(ys, y)


def test_rotation_matches_scipy_and_rot90() -> None:
    rng = np.random.default_rng(_fresh_seed())
    imgs = rng.random((4, 13, 13, 3)).astype(np.float32)
    angles = rng.uniform(-180, 180, 4)
    per_image = gen.rotate_images(imgs, angles)
    for img, angle, mine in zip(imgs, angles, per_image, strict=True):
        ref = ndimage.rotate(img, angle, axes=(1, 0), reshape=False, order=1, mode="nearest")
        np.testing.assert_allclose(mine, ref, atol=1e-4)
    fixed = gen.rotate_images(imgs, float(angles[0]))
    ref0 = ndimage.rotate(imgs[1], angles[0], axes=(1, 0), reshape=False, order=1, mode="nearest")
    np.testing.assert_allclose(fixed[1], ref0, atol=1e-4)
    u8 = rng.integers(0, 256, (3, 10, 10, 3), dtype=np.uint8)
    out, _ = gen.apply_shift(u8, np.zeros(3, dtype=np.int64), gen.DomainShift(rotation=90.0), rng)
    assert np.array_equal(out, np.rot90(u8, 1, axes=(1, 2)))


def test_random_rotation_is_deterministic_and_varies_per_image() -> None:
    seed = _fresh_seed()
    shift = gen.DomainShift(rotation=40.0, random_rotation=True)
    a, _, _ = gen.textures(3, seed, size=SMALL, shift=shift)
    b, _, _ = gen.textures(3, seed, size=SMALL, shift=shift)
    assert a.tobytes() == b.tobytes()
    # the same image rotated by +40 for every example would differ from the per-image version
    fixed, _, _ = gen.textures(3, seed, size=SMALL, shift=gen.DomainShift(rotation=40.0))
    assert not np.array_equal(a, fixed)


def test_label_permutation_is_consistent_permutation() -> None:
    seed, perm_seed = _fresh_seed(), _fresh_seed()
    x, y, names = gen.fractals(3, seed, size=SMALL)
    shift = gen.DomainShift(label_permutation=perm_seed)
    xp, yp, names_p = gen.fractals(3, seed, size=SMALL, shift=shift)
    perm = shift.permutation(len(names))
    assert sorted(perm.tolist()) == list(range(len(names)))
    assert np.array_equal(xp, x) and np.array_equal(yp, perm[y])
    # names follow the images: every example keeps the name of what it depicts
    assert [names_p[i] for i in yp] == [names[i] for i in y]
    assert np.array_equal(
        gen.DomainShift(label_permutation=perm_seed).permutation(8), shift.permutation(8)
    )


def test_noise_has_requested_std() -> None:
    rng = np.random.default_rng(_fresh_seed())
    grey = np.full((50, 16, 16, 3), 128, dtype=np.uint8)
    labels = np.zeros(50, dtype=np.int64)
    for std in (0.02, 0.1):
        out, _ = gen.apply_shift(grey, labels, gen.DomainShift(noise=std), rng)
        measured = (out.astype(np.float64) - 128.0).std() / 255.0
        assert abs(measured - std) < 0.1 * std + 0.002


def test_colour_and_blur_semantics() -> None:
    rng = np.random.default_rng(_fresh_seed())
    x = rng.integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
    y = np.zeros(5, dtype=np.int64)
    swap, _ = gen.apply_shift(x, y, gen.DomainShift(colour="swap"), rng)
    assert np.array_equal(swap, x[..., [2, 0, 1]])
    bgr, _ = gen.apply_shift(x, y, gen.DomainShift(colour="bgr"), rng)
    assert np.array_equal(bgr, x[..., ::-1])
    grey, _ = gen.apply_shift(x, y, gen.DomainShift(colour="grey"), rng)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    np.testing.assert_allclose(grey[..., 0], x.mean(-1), atol=0.51)
    blurred, _ = gen.apply_shift(x, y, gen.DomainShift(blur=1.5), rng)
    tv = lambda a: np.abs(np.diff(a.astype(float), axis=1)).mean()  # noqa: E731
    assert tv(blurred) < 0.5 * tv(x)
    assert abs(blurred.astype(float).mean() - x.mean()) < 2.0
    with pytest.raises(ValueError, match="colour"):
        gen.DomainShift(colour="purple")
    with pytest.raises(ValueError):
        gen.DomainShift(noise=2.0)


# ---------------------------------------------------------------- digits


def test_digits_subset_reindexing_and_pixels_against_sklearn() -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    rng = np.random.default_rng(_fresh_seed())
    wanted = [int(d) for d in rng.choice(10, size=3, replace=False)]
    x, y, names = gen.digits(0, size=24, classes=wanted)
    assert names == [str(d) for d in wanted]
    keep = np.isin(raw.target, wanted)
    expected_labels = np.array([wanted.index(t) for t in raw.target[keep]])
    assert np.array_equal(y, expected_labels)
    assert x.shape == (keep.sum(), 24, 24, 3) and x.dtype == np.uint8
    assert np.array_equal(x[..., 0], x[..., 2])
    # bilinear upsampling against Pillow on a few random examples
    for i in rng.choice(len(x), size=5, replace=False):
        src = raw.images[keep][i].astype(np.float32) / 16.0 * 255.0
        ref = np.asarray(Image.fromarray(src, mode="F").resize((24, 24), Image.BILINEAR))
        assert np.abs(x[i, ..., 0].astype(np.float32) - ref).max() <= 1.0
    full_x, full_y, full_names = gen.digits(1, size=8)
    assert full_names == [str(d) for d in range(10)] and len(full_x) == 1797
    assert np.array_equal(full_y, raw.target)


def test_digits_pixels_are_exact_and_do_not_depend_on_the_blas_threads() -> None:
    """Integer resampling: each pixel is the correctly rounded exact value (a float64 reference
    agrees except on exact rounding ties, where float noise decided before), and one or many
    BLAS threads give the same bytes."""
    from fractions import Fraction

    from sklearn.datasets import load_digits
    from threadpoolctl import threadpool_limits

    size = int(np.random.default_rng(_fresh_seed()).choice([13, 24, 29]))
    x = gen.digits(0, size=size)[0][..., 0]
    with threadpool_limits(1):
        assert np.array_equal(gen.digits(0, size=size)[0][..., 0], x)
    raw = load_digits().images
    m = gen.bilinear_matrix(8, size)
    ref = np.clip(np.rint(np.einsum("oi,nij,pj->nop", m, raw / 16.0, m) * 255.0), 0, 255)
    assert np.abs(x.astype(float) - ref).max() <= 1.0
    # a pixel where they differ is an exact tie: value * 255 ends in exactly one half
    weights = [[Fraction(round(w * 2 * size), 2 * size) for w in row] for row in m]
    for n, o, p in np.argwhere(x != ref)[:5]:
        exact = sum(
            weights[o][i] * Fraction(int(raw[n, i, j]), 16) * weights[p][j]
            for i in range(8)
            for j in range(8)
        )
        assert (exact * 255) % 1 == Fraction(1, 2)
        assert x[n, o, p] == round(exact * 255)  # Python rounds ties to even, as np.rint


def test_bilinear_matrix_rows_are_convex_weights() -> None:
    m = gen.bilinear_matrix(8, 29)
    np.testing.assert_allclose(m.sum(1), 1.0)
    assert (m >= 0).all()
    # a linear ramp stays linear in the interior under bilinear resampling
    ramp = np.arange(8.0)
    up = m @ ramp
    src = (np.arange(29) + 0.5) * 8 / 29 - 0.5
    inner = (src >= 0) & (src <= 7)
    np.testing.assert_allclose(up[inner], src[inner], atol=1e-12)


# ---------------------------------------------------------------- text


def test_topic_text_format_determinism_and_balance() -> None:
    seed = _fresh_seed()
    texts, y, names = gen.topic_text(30, seed)
    assert len(names) >= 8 and len(texts) == 30 * len(names) and y.dtype == np.int64
    lengths = [len(t.split()) for t in texts]
    assert min(lengths) >= 8 and max(lengths) <= 25
    assert np.array_equal(np.bincount(y), np.full(len(names), 30))
    again = gen.topic_text(30, seed)
    assert again[0] == texts and np.array_equal(again[1], y) and again[2] == names
    assert gen.topic_text(30, seed + 1)[0] != texts
    _, y2, names2 = gen.topic_text(4, seed, classes=["music", "sports"])
    assert names2 == ["music", "sports"] and np.bincount(y2).tolist() == [4, 4]


def test_topic_vocabularies_are_disjoint() -> None:
    seen: dict[str, str] = {}
    for topic, parts in gen.TOPICS.items():
        for word in (w for words in parts.values() for w in words):
            assert seen.setdefault(word, topic) == topic, f"{word!r} in {seen[word]} and {topic}"


def test_label_noise_flips_exact_fraction_to_other_classes() -> None:
    seed = _fresh_seed()
    texts, clean, _ = gen.topic_text(25, seed)
    texts_n, noisy, _ = gen.topic_text(25, seed, label_noise=0.2)
    assert texts_n == texts
    assert (noisy != clean).sum() == round(0.2 * len(clean))
    assert noisy.min() >= 0 and noisy.max() <= clean.max()


def test_topics_learnable_with_many_examples_but_not_with_five() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    seed = _fresh_seed()
    test_x, test_y, _ = gen.topic_text(60, seed + 1)
    accs = {}
    for n in (5, 120):
        tr_x, tr_y, _ = gen.topic_text(n, seed)
        model = make_pipeline(TfidfVectorizer(), LogisticRegression(C=10.0, max_iter=1000))
        accs[n] = model.fit(tr_x, tr_y).score(test_x, test_y)
    assert accs[120] > 0.9  # labels carry the topic
    assert accs[5] < 0.85  # but a few examples do not cover the cue vocabulary


# ---------------------------------------------------------------- difficulty and preview


def test_shapes_not_linearly_separable_on_raw_pixels() -> None:
    from sklearn.linear_model import LogisticRegression

    seed = _fresh_seed()
    tr_x, tr_y, _ = gen.shapes(20, seed, size=SMALL)
    te_x, te_y, _ = gen.shapes(20, seed + 1, size=SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(max_iter=200).fit(tr_x.reshape(len(tr_x), -1) / 255.0, tr_y)
    assert clf.score(te_x.reshape(len(te_x), -1) / 255.0, te_y) < 0.6
