"""How the evaluations report: per-setting means, the markdown table, bar and per-turn plots, BENCHMARKS.md.

Every evaluation (eval.consistency for novel view synthesis, eval.edit_consistency for long video
editing) runs the same model in several settings (memory and its baselines) over held-out scenes and
collects, per setting, one value per scene and metric, and one value per turn (or segment) and scene for
its per-turn curve. These functions turn that into what a person reads.

Intervals are 95% percentile bootstrap intervals over scenes (`BOOTSTRAP_RESAMPLES` resamples of the
scenes with replacement, a fixed seed): the same resampled scenes for every setting, so that a
comparison between settings (`reduction_interval`) is paired, as the settings ran on the same scenes
with the same seeds.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

FLOOR = "ground truth through the codec (floor)"  # the row every evaluation adds: no model can do better
COLOURS = {
    "memory": "tab:green",
    "independent": "tab:gray",
    "no memory": "tab:gray",
    "autoregressive": "tab:blue",
    "previous segment": "tab:blue",
    FLOOR: "black",
}
Column = tuple[str, str, str]  # metric key, header, format
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95


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


def _resamples(scenes: int, seed: int = 0) -> np.ndarray:
    """`[BOOTSTRAP_RESAMPLES, scenes]` scene indices drawn with replacement (the same for every call)."""
    return np.random.default_rng(seed).integers(0, scenes, (BOOTSTRAP_RESAMPLES, scenes))


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _resampled_means(values: Sequence[float], picks: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of only NaN scenes is NaN, and skipped
        return np.nanmean(np.asarray(values, np.float64)[picks], axis=1)


def intervals(per_scene: Mapping[str, Mapping[str, Sequence[float]]]) -> dict[str, dict[str, tuple[float, float]]]:
    """`{setting: {metric: [value per scene]}}` -> `{setting: {metric: (low, high)}}`, the 95% bootstrap
    interval of each mean over scenes."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for setting, metrics in per_scene.items():
        out[setting] = {}
        for metric, values in metrics.items():
            out[setting][metric] = _percentiles(_resampled_means(values, _resamples(len(values))))
    return out


def reduction_interval(
    per_scene: Mapping[str, Mapping[str, Sequence[float]]], metric: str, ours: str, baseline: str
) -> tuple[float, float]:
    """The 95% paired bootstrap interval of `reduction` (how much lower `ours` has `metric` than
    `baseline`): both means over the same resampled scenes."""
    picks = _resamples(len(per_scene[ours][metric]))
    ratio = _resampled_means(per_scene[ours][metric], picks) / _resampled_means(per_scene[baseline][metric], picks)
    return _percentiles(1.0 - ratio)


def add_scene(
    per_scene: dict[str, dict[str, list[float]]],
    curves: dict[str, list[list[float]]],
    setting: str,
    values: Mapping[str, float],
    curve: Sequence[float],
) -> None:
    """Appends one scene's `values` (metric -> value) and per-turn `curve` to `setting`'s."""
    for metric, value in values.items():
        per_scene[setting][metric].append(value)
    curves[setting].append(list(curve))


def reductions(
    per_scene: Mapping[str, Mapping[str, Sequence[float]]], metric: str, baselines: Mapping[str, str]
) -> dict[str, dict[str, float | tuple[float, float]]]:
    """`memory_vs_<name>_error_reduction` -> the mean `reduction` of `metric` against each baseline
    (name -> setting) and its paired 95% `reduction_interval`."""
    summary = mean_over_scenes(per_scene)
    return {
        f"memory_vs_{name}_error_reduction": {
            "mean": reduction(summary, metric, "memory", baseline),
            "interval": reduction_interval(per_scene, metric, "memory", baseline),
        }
        for name, baseline in baselines.items()
    }


def pooled_reduction_interval(ours: Sequence[float], baseline: Sequence[float]) -> tuple[float, float]:
    """The 95% paired bootstrap interval of `1 - sum(ours) / sum(baseline)` over items (e.g. examples'
    summed errors over the same cells): a reduction of pooled totals."""
    picks = _resamples(len(ours))
    ratio = np.asarray(ours, np.float64)[picks].sum(1) / np.asarray(baseline, np.float64)[picks].sum(1)
    return _percentiles(1.0 - ratio)


def reduction(summary: Mapping[str, Mapping[str, float]], metric: str, ours: str, baseline: str) -> float:
    """How much lower `ours` has `metric` than `baseline`, as a fraction of the baseline's."""
    return 1.0 - summary[ours][metric] / summary[baseline][metric]


def lower_or_higher(reduction: float, interval: tuple[float, float] | None = None) -> str:
    """A `reduction` (as `reduction` returns it) in words: "7.8% lower" or "2.4% higher"; with its
    `interval`, "7.8% lower (95% interval 3.1% to 12.0% lower)"."""
    words = lambda r: f"{100 * abs(r):.1f}% {'lower' if r >= 0 else 'higher'}"
    if interval is None:
        return words(reduction)
    return f"{words(reduction)} (95% interval {words(interval[0])} to {words(interval[1])})"


def table(
    summary: Mapping[str, Mapping[str, float]],
    columns: Sequence[Column],
    floor: Mapping[str, float],
    spread: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    floor_label: str = "ground-truth videos (floor)",
) -> str:
    """A markdown table: one row per setting, one column per metric (with its 95% interval from
    `spread`, as `intervals` returns), then the ground truth's own values of the metrics that have one
    (`floor`, in the row `floor_label`)."""
    rows = ["| setting | " + " | ".join(header for _, header, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]

    def cell(setting: str, key: str, fmt: str) -> str:
        value = format(summary[setting][key], fmt)
        if spread is None:
            return value
        low, high = spread[setting][key]
        return f"{value} [{low:{fmt}}, {high:{fmt}}]"

    for setting in summary:
        rows.append(f"| {setting} | " + " | ".join(cell(setting, key, fmt) for key, _, fmt in columns) + " |")
    if floor:
        cells = [format(floor[key], fmt) if key in floor else "" for key, _, fmt in columns]
        rows.append(f"| {floor_label} | " + " | ".join(cells) + " |")
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
    spread: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> Path:
    """One bar chart per `(metric, title)` panel, a bar per setting, with its 95% interval from `spread`
    (as `intervals` returns) as an error bar."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    names = list(summary)
    for ax, (metric, title) in zip(axes[0], panels, strict=True):
        means = np.array([summary[n][metric] for n in names])
        errors = None
        if spread is not None:
            low, high = np.array([spread[n][metric] for n in names]).T
            errors = np.stack([means - low, high - means])
        ax.bar(names, means, yerr=errors, capsize=4, color=[COLOURS.get(n, "tab:orange") for n in names])
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
        style = "--" if name == FLOOR else "-"
        ax.plot(range(first, first + len(values)), values, style, marker="o", label=name, color=COLOURS.get(name))
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
