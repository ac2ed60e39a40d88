"""Generate a folder target of N JPEGs (one sub-folder per class) for memory measurements.

    python tests/benchmarks/make_folder.py /tmp/folder6k --n 6000 --size 224 --suite /tmp/mem.yaml
    /usr/bin/time -v atlbench sweep /tmp/mem.yaml --jobs 1 --quiet   # "Maximum resident set size"

Images are noise plus a class-dependent colour cast and stripe, so a model can learn something;
they are written with one worker per core. ``--suite`` also writes a suite that sweeps the folder
with ``test_resnet`` (random init, a few steps): a linear probe and a fine-tune on every label,
one seed. The
first sweep decodes the folder into the decoded-image cache (``$ATLBENCH_CACHE/images``); later
sweeps read it memory-mapped.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def _write(job: tuple[Path, int, int, int, int, int]) -> None:
    from PIL import Image

    root, start, stop, classes, size, seed = job
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        c = i % classes
        x = rng.integers(0, 160, (size, size, 3), dtype=np.uint8)
        x[..., c % 3] += np.uint8(60 + 90 * (c // 3) / max(1, classes // 3))
        x[(c * 13) % size : (c * 13) % size + size // 16] = 255  # a class-placed stripe
        Image.fromarray(x).save(root / f"class{c:02d}" / f"{i:06d}.jpg", quality=90)


def make_folder(root: Path, n: int, classes: int = 10, size: int = 224, seed: int = 0) -> Path:
    """``n`` JPEGs of ``size`` px in ``classes`` sub-folders of ``root``."""
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    step = 500
    jobs = [(root, a, min(n, a + step), classes, size, seed) for a in range(0, n, step)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_write, jobs))
    return root


def write_suite(path: Path, folder: Path, size: int, arch: str = "test_resnet") -> None:
    """A one-seed sweep of ``folder`` with ``arch`` (random init): a linear probe and a
    fine-tune of one epoch on every label for ``test_resnet``; for a larger ``arch``, only a
    fine-tune of a few steps (20 labels per class), whose test split is still scored in full."""
    import yaml

    small = arch == "test_resnet"
    suite = {
        "name": f"memory-{folder.name}-{arch}",
        "seeds": [0],
        "device": "auto",
        "sources": [
            {
                "id": arch,
                "timm": {"arch": arch, "pretrained": False, "input_size": size},
            },
        ],
        "targets": [{"id": folder.name, "folder": {"path": str(folder), "image_size": size}}],
        "strategies": ["linear_probe", "finetune"] if small else ["finetune"],
        "budgets": [{"fraction": 1.0}] if small else [{"per_class": 20}],
        "estimators": [],
        "training": {"max_epochs": 1, "trials": 1, "min_epoch_samples": 64},
    }
    path.write_text(yaml.safe_dump(suite, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suite", type=Path, help="also write a suite that sweeps the folder")
    parser.add_argument("--arch", default="test_resnet", help="the suite's timm architecture")
    args = parser.parse_args()
    make_folder(args.root, args.n, args.classes, args.size, args.seed)
    if args.suite is not None:
        write_suite(args.suite, args.root.resolve(), args.size, args.arch)
    print(f"{args.n} images in {args.root}")


if __name__ == "__main__":
    main()
