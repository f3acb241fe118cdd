"""How the evaluations report: per-setting means, the markdown table, bar and per-turn plots, BENCHMARKS.md.

Every evaluation (eval.consistency for novel view synthesis, eval.long_edit for long video editing)
runs the same model in several settings (memory and its baselines) over held-out scenes and collects,
per setting, one value per scene and metric, and one value per turn (or segment) and scene for its
per-turn curve. These functions turn that into what a person reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

COLOURS = {
    "memory": "tab:green",
    "independent": "tab:gray",
    "no memory": "tab:gray",
    "autoregressive": "tab:blue",
    "previous segment": "tab:blue",
}
Column = tuple[str, str, str]  # metric key, header, format


def mean_over_scenes(per_scene: Mapping[str, Mapping[str, Sequence[float]]]) -> dict[str, dict[str, float]]:
    """`{setting: {metric: [value per scene]}}` -> `{setting: {metric: mean}}` (NaN scenes skipped)."""
    return {
        s: {m: float(np.nanmean(v)) if len(v) else float("nan") for m, v in r.items()} for s, r in per_scene.items()
    }


def mean_curves(per_scene: Mapping[str, Sequence[Sequence[float]]]) -> dict[str, list[float]]:
    """`{setting: [[value per turn] per scene]}` -> `{setting: [mean per turn]}` (scenes may have fewer
    turns; each turn averages the scenes that have it, NaNs skipped)."""
    curves = {}
    for setting, scenes in per_scene.items():
        length = max((len(s) for s in scenes), default=0)
        padded = np.full((len(scenes), length), np.nan)
        for i, values in enumerate(scenes):
            padded[i, : len(values)] = values
        with np.errstate(invalid="ignore"):
            curves[setting] = [float(v) if np.isfinite(v) else float("nan") for v in _nanmean0(padded)]
    return curves


def _nanmean0(values: np.ndarray) -> np.ndarray:
    counts = np.sum(np.isfinite(values), axis=0)
    return np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), np.nan)


def reduction(summary: Mapping[str, Mapping[str, float]], metric: str, ours: str, baseline: str) -> float:
    """How much lower `ours` has `metric` than `baseline`, as a fraction of the baseline's."""
    return 1.0 - summary[ours][metric] / summary[baseline][metric]


def lower_or_higher(reduction: float) -> str:
    """A `reduction` (as `reduction` returns it) in words: "7.8% lower" or "2.4% higher"."""
    return f"{100 * abs(reduction):.1f}% {'lower' if reduction >= 0 else 'higher'}"


def table(summary: Mapping[str, Mapping[str, float]], columns: Sequence[Column], floor: Mapping[str, float]) -> str:
    """A markdown table: one row per setting, one column per metric, then the ground truth's own
    values of the metrics that have one (`floor`: what the ground-truth videos score)."""
    rows = ["| setting | " + " | ".join(header for _, header, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for setting, metrics in summary.items():
        rows.append(f"| {setting} | " + " | ".join(format(metrics[key], fmt) for key, _, fmt in columns) + " |")
    if floor:
        cells = [format(floor[key], fmt) if key in floor else "" for key, _, fmt in columns]
        rows.append("| ground-truth videos (floor) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_plot(
    summary: Mapping[str, Mapping[str, float]],
    panels: Sequence[tuple[str, str]],
    path: Path,
    floor: Mapping[str, float],
) -> Path:
    """One bar chart per `(metric, title)` panel, a bar per setting; a dashed line at the floor."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    names = list(summary)
    for ax, (metric, title) in zip(axes[0], panels, strict=True):
        ax.bar(names, [summary[n][metric] for n in names], color=[COLOURS.get(n, "tab:orange") for n in names])
        if metric in floor:
            ax.axhline(floor[metric], color="k", linestyle="--", label="ground truth")
            ax.legend()
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curve_plot(
    curves: Mapping[str, Sequence[float]],
    path: Path,
    xlabel: str,
    ylabel: str,
    title: str,
    floor: Sequence[float] | None = None,
    first: int = 1,
) -> Path:
    """Per-turn (or per-segment) curves, one line per setting; x starts at `first`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, values in curves.items():
        ax.plot(range(first, first + len(values)), values, marker="o", label=name, color=COLOURS.get(name))
    if floor is not None:
        ax.plot(range(first, first + len(floor)), floor, "k--", label="ground truth")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
