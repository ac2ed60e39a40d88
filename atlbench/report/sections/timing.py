"""Timing: per strategy, the median cost of a cell and what it went into; under it, every
cell's clocks (``timing.csv``: every clock, throughput and memory figure a cell recorded)."""

from __future__ import annotations

import pandas as pd

from atlbench.registry import register_report_section
from atlbench.report._study import StudyData
from atlbench.report._tables import NOTHING
from atlbench.report.sections._base import Section, Table

TIMING_COLUMNS = [
    "source",
    "target",
    "strategy",
    "role",
    "budget",
    "seed",
    "device",
    "dtype",
    "n_train",
    "n_trials",
    "cost_s",
    "train_time_s",
    "data_wait_s",
    "compute_time_s",
    "selection_time_s",
    "time_to_best_s",
    "feature_time_s",
    "train_samples_per_s",
    "eval_samples_per_s",
    "peak_mem_mb",
    "trainable_params",
    "total_params",
    "wall_time_s",
]
SUMMARY_COLUMNS = ["strategy", "role", "cells", "median_cost_s", "total_cost_s",
                   "train_samples_per_s", "data_wait_s", "compute_time_s", "time_to_best_s",
                   "peak_mem_mb"]  # fmt: skip


@register_report_section("timing", order=80)
class Timing(Section):
    title = "Timing"
    requires = ("cost_s",)
    intro = (
        "<p>Per strategy: the median whole cost of a cell (every trial, the retrain and feature "
        "extraction; CUDA events on GPU, <code>perf_counter</code> on CPU), the selected run's "
        "training throughput, its time to the best validation score, and peak memory (CUDA "
        "allocator peak; omitted on CPU, where process memory only grows).</p>"
    )
    csv = "timing_summary"
    table = Table(
        {
            "strategy": "Strategy",
            "role": "Role",
            "cells": "Cells",
            "median_cost_s": "Median cost (s)",
            "total_cost_s": "Total cost (s)",
            "train_samples_per_s": "Train samples/s",
            "data_wait_s": "Data wait (s)",
            "compute_time_s": "Compute (s)",
            "time_to_best_s": "Time to best (s)",
            "peak_mem_mb": "Peak memory (MB)",
        }
    )
    empty = NOTHING

    def data(self, views: StudyData) -> pd.DataFrame:
        """Per strategy and role: median cell cost, training throughput, how the training time
        splits into waiting for data and computing, time to the best validation score and peak
        memory, over its finished cells."""
        t = views.table("timing-cells")
        if t.empty:
            return pd.DataFrame(columns=SUMMARY_COLUMNS)
        numeric = t.assign(**{c: pd.to_numeric(t[c], errors="coerce") for c in TIMING_COLUMNS[9:]})
        out = numeric.groupby(["strategy", "role"], sort=False).agg(
            cells=("cost_s", "size"),
            median_cost_s=("cost_s", "median"),
            total_cost_s=("cost_s", "sum"),
            train_samples_per_s=("train_samples_per_s", "median"),
            data_wait_s=("data_wait_s", "median"),
            compute_time_s=("compute_time_s", "median"),
            time_to_best_s=("time_to_best_s", "median"),
            peak_mem_mb=("peak_mem_mb", "median"),
        )
        return out.reset_index()[SUMMARY_COLUMNS]


@register_report_section("timing-cells", order=10)
class TimingCells(Section):
    parent = "timing"
    title = "Every cell"
    folded = True
    csv = "timing"
    csv_always = True
    table = Table(
        {
            "source": "Source", "target": "Target", "strategy": "Strategy", "role": "Role",
            "budget": "Budget", "seed": "Seed", "device": "Device", "n_train": "Labels",
            "cost_s": "Cost (s)", "train_time_s": "Train (s)",
            "train_samples_per_s": "Train samples/s", "peak_mem_mb": "Peak memory (MB)",
        },
        more={
            "dtype": "Dtype", "n_trials": "Trials", "selection_time_s": "Selection (s)",
            "feature_time_s": "Features (s)", "eval_samples_per_s": "Eval samples/s",
            "trainable_params": "Trainable params", "total_params": "Total params",
            "wall_time_s": "Wall time (s)",
        },
    )  # fmt: skip
    empty = NOTHING

    def data(self, views: StudyData) -> pd.DataFrame:
        """One row per finished cell: every clock, throughput and memory figure it recorded."""
        if not views.has_results or "timing" in views.omitted:
            return pd.DataFrame(columns=TIMING_COLUMNS)
        done = views.records[views.records["status"] == "done"]
        return done.reindex(columns=TIMING_COLUMNS).reset_index(drop=True)
