"""Report figures as PNG bytes (matplotlib's Agg canvas, no display, no global pyplot state).

Each function returns a :class:`Plot` or None when the data for it do not exist; the caller records why.
Figures are small and plain, meant to be dropped into a paper or a README unchanged.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rsitr_bench.reports.compare import per_query_result
from rsitr_bench.reports.leaderboard import Row

_MAX_SERIES = 8  # beyond this a legend stops being readable


@dataclass(frozen=True)
class Plot:
    """One figure: ``name`` is its file stem, ``caption`` says what it shows and how it was computed."""

    name: str
    title: str
    caption: str
    png: bytes


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _series_label(row: Row) -> str:
    return row.label + ("" if row.compliant else " [NON-COMPLIANT]")


def recall_curves(name: str, rows: Sequence[Row], max_k: int = 50) -> Plot | None:
    """Recall@K for K = 1..max_k in both directions, averaged over each run's seeds."""
    curves = []
    for row in rows[:_MAX_SERIES]:
        seeds = row.record.seed_arrays()
        if not seeds:
            continue
        per_dir = {}
        fingerprint = row.record.fingerprint
        for d, gallery in (("i2t", fingerprint.get("captions")), ("t2i", fingerprint.get("images"))):
            ranks = [a[f"{d}_ranks"] for a in seeds.values() if f"{d}_ranks" in a]
            if not ranks:
                break
            ks = np.arange(1, min(max_k, int(gallery or max_k)) + 1)
            per_dir[d] = (ks, np.mean([[100.0 * np.mean(r <= k) for k in ks] for r in ranks], axis=0))
        if len(per_dir) == 2:
            curves.append((_series_label(row), per_dir))
    if not curves:
        return None
    fig = Figure(figsize=(9, 3.6))
    for i, (d, title) in enumerate((("i2t", "image → text"), ("t2i", "text → image"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for label, per_dir in curves:
            ax.plot(*per_dir[d], label=label)
        ax.set(xscale="log", xlabel="K", ylabel="Recall@K (%)", title=title, ylim=(0, 100))
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7, loc="lower right")
    return Plot(name, "Recall@K curves", f"Recall@K (percent) for K = 1 to {max_k} (or the gallery size) "
                "from per-query first-positive ranks, averaged over seeds.", _png(fig))


def per_class_recall(name: str, rows: Sequence[Row], labels: Sequence[str],
                     caption_image: np.ndarray) -> Plot | None:
    """Mean of R@1/5/10 over both directions per scene class of the test images (caption queries belong to
    the class of the image that owns them)."""
    classes = sorted(set(labels))
    image_class = np.array([classes.index(c) for c in labels])
    caption_class = image_class[np.asarray(caption_image)]
    bars = []
    for row in rows[:_MAX_SERIES]:
        res = per_query_result(row.record)
        if res is None or res.n_queries != {"i2t": len(image_class), "t2i": len(caption_class)}:
            continue
        values = []
        for c in range(len(classes)):
            parts = [100.0 * res.i2t_hits[k][image_class == c].mean() for k in res.ks]
            parts += [100.0 * res.t2i_hits[k][caption_class == c].mean() for k in res.ks]
            values.append(float(np.mean(parts)))
        bars.append((_series_label(row), values))
    if not bars:
        return None
    fig = Figure(figsize=(max(6.0, 0.9 * len(classes) + 2), 3.6))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(bars)
    x = np.arange(len(classes))
    for i, (label, values) in enumerate(bars):
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=label)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set(ylabel="mean recall (%)", ylim=(0, 100), title="Per-scene-class recall")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return Plot(name, "Per-scene-class recall", "Per scene class of the test images: mean of R@1, R@5 and "
                "R@10 in both directions (a caption query counts for its image's class), averaged over "
                "seeds.", _png(fig))


def optimisation_history(name: str, study: str, trials: Sequence[Mapping]) -> Plot | None:
    """Validation mR of each trial, the running best, and where trials were pruned or failed."""
    done = [(t["number"], t["value"]) for t in trials if t["value"] is not None]
    if not done:
        return None
    fig = Figure(figsize=(6.5, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    numbers, values = zip(*done, strict=True)
    ax.scatter(numbers, values, s=18, label="completed trial")
    ax.step(numbers, np.maximum.accumulate(values), where="post", color="C1", label="best so far")
    for state, marker in (("pruned", "x"), ("failed", "v")):
        stopped = [t["number"] for t in trials if t["status"] == state]
        if stopped:
            ax.scatter(stopped, [min(values)] * len(stopped), marker=marker, color="grey", label=state)
    ax.set(xlabel="trial", ylabel="validation mR (%)", title=f"Optimisation history: {study}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return Plot(name, f"Optimisation history ({study})", "Validation mR of every completed trial of the "
                "sweep (the objective; trials never score test), the best so far, and the trials stopped by "
                "the pruner or failed (drawn at the lowest value).", _png(fig))


def importances(name: str, study: str, scores: Mapping[str, float]) -> Plot:
    """Horizontal bars of parameter importances (PED-ANOVA, normalised to sum to 1)."""
    items = sorted(scores.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(6.0, 0.45 * len(items) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh([k for k, _ in items], [v for _, v in items], color="C2")
    ax.set(xlabel="importance", xlim=(0, 1), title=f"Parameter importances: {study}")
    ax.grid(axis="x", alpha=0.3)
    return Plot(name, f"Parameter importances ({study})", "How much of the variation in validation mR each "
                "searched parameter explains (Optuna's PED-ANOVA over the completed trials, normalised).",
                _png(fig))
