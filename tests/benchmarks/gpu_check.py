"""The GPU check, in one short run: one printed line per figure.

Run it on a machine with CUDA (it exits with a message otherwise)::

    HF_HUB_OFFLINE=1 python tests/benchmarks/gpu_check.py [--images 2000] [--out DIR]

It measures

* the training engine (``atlbench.train.fit``) against the loop anyone would hand-write for a
  GPU (bf16 autocast, channels_last, fused AdamW, warm-up + cosine, clipping, one validation pass
  per epoch), same model and data, in alternating rounds so that drift cancels;
* :class:`~atlbench._timing.DeviceClock` (CUDA events) against synchronised wall-clock time around
  the same queued work;
* the peak GPU memory and the data-wait / compute split of one fine-tune cell of a real sweep
  (``atlbench sweep --device cuda``) on a generated folder of JPEGs at 224 px, which also runs the
  uint8-until-the-batch data path on the device.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def line(name: str, value: str) -> None:
    print(f"GPU-CHECK {name}: {value}", flush=True)


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", HERE / "test_bench_gpu.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def engine_against_bare(rounds: int) -> None:
    bench = _bench_module()
    train, val = bench.make_splits()
    samples = bench.N_TRAIN * bench.EPOCHS
    for loop in (bench.bare_loop, bench.engine):  # warm-up: cuDNN autotune, allocator growth
        loop(bench.fresh_model(), train, val)
    times: dict[str, list[float]] = {"bare": [], "engine": []}
    for _ in range(rounds):
        for name, loop in (("bare", bench.bare_loop), ("engine", bench.engine)):
            model = bench.fresh_model()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            loop(model, train, val)
            torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    ratios = [b / e for b, e in zip(times["bare"], times["engine"], strict=True)]
    line(
        f"engine_vs_bare_bf16 (resnet18 {bench.SIZE}px, {samples} samples/round)",
        f"engine throughput = {statistics.median(ratios):.3f} x bare loop "
        f"(rounds {', '.join(f'{r:.3f}' for r in ratios)}); "
        f"bare {samples / statistics.median(times['bare']):.0f} samples/s, "
        f"engine {samples / statistics.median(times['engine']):.0f} samples/s",
    )


def event_clock_against_wall() -> None:
    ratios = _bench_module().event_over_wall_ratios()
    line(
        "cuda_event_vs_synchronised_wall",
        f"median {statistics.median(ratios):.4f} (min {min(ratios):.4f}, max {max(ratios):.4f})",
    )


def make_folder(root: Path, n_images: int, classes: int = 10, size: int = 224) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n_images):
        label = i % classes
        folder = root / f"class{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.zeros((size, size, 3), dtype=np.float32)
        base[..., label % 3] = 60 + 18 * label
        noise = rng.normal(0, 40, size=(size, size, 3))
        image = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:06d}.jpg", quality=90)


SUITE = """\
name: gpu-check
seeds: [0]
device: auto
sources:
  - id: r18
    timm: {{arch: resnet18, pretrained: false}}
targets:
  - id: photos
    folder: {{path: {path}, image_size: 224}}
strategies:
  - linear_probe
  - finetune
budgets: [{{per_class: {per_class}}}]
estimators: [logme]
cka: false
training: {{max_epochs: 3, patience: 3, trials: 2, batch_size: 64}}
"""


def fine_tune_cell(n_images: int, out: Path, device: str = "cuda") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        make_folder(folder, n_images)
        suite = Path(tmp) / "gpu-check.yaml"
        suite.write_text(SUITE.format(path=folder, per_class=max(2, n_images // 20)))
        env = dict(os.environ, ATLBENCH_CACHE=str(Path(tmp) / "cache"), HF_HUB_OFFLINE="1")
        results = Path(tmp) / "results"
        t0 = time.perf_counter()
        command = [sys.executable, "-m", "atlbench.cli", "sweep", str(suite), "--jobs", "1"]
        command += ["--device", device, "--results-dir", str(results)]
        command += ["--reports-dir", str(Path(tmp) / "reports")]
        proc = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        (out / "sweep.log").write_text(proc.stdout + "\n" + proc.stderr)
        if proc.returncode != 0:
            line("fine_tune_cell", f"sweep failed (rc {proc.returncode}); see sweep.log")
            return
        timing = next(results.rglob("timing.csv"))
        rows = list(csv.DictReader(timing.open()))
        (out / "timing.csv").write_bytes(timing.read_bytes())
        for row in rows:
            detail = ", ".join(
                f"{k} {row[k]}"
                for k in (
                    "peak_mem_mb",
                    "train_time_s",
                    "data_wait_s",
                    "compute_time_s",
                    "train_samples_per_s",
                )
                if row.get(k)
            )
            line(f"cell {row['strategy']} ({n_images} images at 224 px)", detail)
        line("sweep_wall_s", f"{wall:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    line("device", f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    event_clock_against_wall()
    engine_against_bare(args.rounds)
    if args.images > 0:  # --images 0: only the engine and clock figures
        fine_tune_cell(args.images, args.out)
    line("peak_allocated_this_process_mb", f"{torch.cuda.max_memory_allocated() / 2**20:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
