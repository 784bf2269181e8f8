"""The entropy–probability plane: confident-conflict thresholds, quadrant shares, and the two landscapes.

A token is a *confident conflict* when both its normalized entropy H̃ and its target probability p(y) lie
strictly below their thresholds; by default each threshold is the 15% quantile (linear interpolation) of its
statistic over the data set's label tokens, as in the EAFT paper (arXiv 2601.02151, Fig. 1).
Plots use matplotlib's object API on an Agg canvas, so no global backend is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from eaft.analysis.outputs import write_with

QUADRANTS = ("low_entropy_low_prob", "low_entropy_high_prob", "high_entropy_low_prob", "high_entropy_high_prob")
#: What each quadrant means, for readers of the reports (the identifiers stay the keys of summary.json and URLs).
QUADRANT_LABELS = {
    "low_entropy_low_prob": "confident conflict: sure of another token (low H̃, low p)",
    "low_entropy_high_prob": "confident and agreeing (low H̃, high p)",
    "high_entropy_low_prob": "unsure, label unlikely (high H̃, low p)",
    "high_entropy_high_prob": "unsure, label likely (high H̃, high p)",
}
CONFLICT = QUADRANTS[0]


@dataclass(frozen=True)
class Thresholds:
    entropy: float
    prob: float
    entropy_quantile: float
    prob_quantile: float
    entropy_column: str = "entropy_topk"

    def to_dict(self) -> dict:
        return asdict(self)


def quantile_thresholds(
    entropy: np.ndarray,
    prob: np.ndarray,
    *,
    entropy_quantile: float = 0.15,
    prob_quantile: float = 0.15,
    entropy_column: str = "entropy_topk",
) -> Thresholds:
    """The q-quantiles (linear interpolation) of entropy and probability. Shape: [N], [N]."""
    for name, q in (("entropy", entropy_quantile), ("probability", prob_quantile)):
        if not 0.0 < q < 1.0:
            raise ValueError(f"{name} quantile must lie in (0, 1), got {q}")
    if len(entropy) == 0:
        raise ValueError("no label tokens to take quantiles of: every sample lacks assistant tokens")
    return Thresholds(
        entropy=float(np.quantile(entropy.astype(np.float64), entropy_quantile)),
        prob=float(np.quantile(prob.astype(np.float64), prob_quantile)),
        entropy_quantile=entropy_quantile,
        prob_quantile=prob_quantile,
        entropy_column=entropy_column,
    )


def conflict_mask(entropy: np.ndarray, prob: np.ndarray, th: Thresholds) -> np.ndarray:
    """Confident conflicts: H̃ < τ_H and p < τ_p. Shape: [N] bool."""
    return (entropy < th.entropy) & (prob < th.prob)


def quadrant_shares(entropy: np.ndarray, prob: np.ndarray, th: Thresholds) -> dict[str, float]:
    """Share of tokens in each quadrant (they sum to 1; all 0 for no tokens)."""
    n = len(entropy)
    low_h, low_p = entropy < th.entropy, prob < th.prob
    counts = (low_h & low_p, low_h & ~low_p, ~low_h & low_p, ~low_h & ~low_p)
    return {name: float(c.sum()) / n if n else 0.0 for name, c in zip(QUADRANTS, counts, strict=True)}


def quadrant_codes(entropy: np.ndarray, prob: np.ndarray, th: Thresholds) -> np.ndarray:
    """Each token's quadrant as an index into QUADRANTS (0 = confident conflict). Shape: [N] int8."""
    high_h, high_p = ~(entropy < th.entropy), ~(prob < th.prob)  # negated as in conflict_mask, NaN included
    return (high_h.astype(np.int8) * 2 + high_p.astype(np.int8)).astype(np.int8)


@dataclass
class Panel:
    """One landscape panel: the tokens of a data set, or of the rollouts. Shape: [N] each."""

    title: str
    entropy: np.ndarray
    prob: np.ndarray
    grads: dict[str, np.ndarray] | None = None


PROB_AXES = ("linear", "log")


def _edges(panels: Sequence[Panel], bins: int, prob_axis: str = "log") -> tuple[np.ndarray, np.ndarray]:
    """Bin edges of p(y) (linear on [0, 1], or log from the decade of the smallest p) and of H̃."""
    if prob_axis not in PROB_AXES:
        raise ValueError(f"probability axis must be one of {PROB_AXES}, got {prob_axis!r}")
    top = max([1.0, *(float(p.entropy.max()) for p in panels if len(p.entropy))])
    py = np.linspace(0.0, top, bins + 1)
    if prob_axis == "linear":
        return np.linspace(0.0, 1.0, bins + 1), py
    smallest = min([1e-3, *(float(p.prob[p.prob > 0].min()) for p in panels if (p.prob > 0).any())])
    low = 10.0 ** np.floor(np.log10(max(smallest, 1e-12)))
    return np.logspace(np.log10(low), 0.0, bins + 1), py


def _histogram(panel: Panel, px: np.ndarray, py: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    # on a log axis, probabilities below the first edge (fp32 underflow included) land in the first column
    prob = np.clip(panel.prob, px[0], 1.0)
    counts, _, _ = np.histogram2d(prob, panel.entropy, bins=(px, py), weights=weights)
    return counts


def _figure(n: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.2 * n, 7.0), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, n, i + 1) for i in range(n)]


def _mark_region(ax, th: Thresholds, label: str, px: np.ndarray) -> None:
    """Hatch the confident-conflict region and name it (with `label`) in the legend; set the p(y) axis."""
    from matplotlib.patches import Rectangle

    if px[0] > 0:
        ax.set_xscale("log")
    ax.set_xlim(px[0], 1.0)
    region = Rectangle(
        (px[0], 0), max(th.prob - px[0], 0.0), th.entropy, fill=False, edgecolor="red", hatch="//", lw=1.5
    )
    ax.add_patch(region)
    ax.axvline(th.prob, color="red", ls=":", lw=0.8)
    ax.axhline(th.entropy, color="red", ls=":", lw=0.8)
    region.set_label(f"H̃ < {th.entropy:.3g}, p < {th.prob:.3g}: {label}")
    ax.legend(handles=[region], loc="upper right", fontsize=8, framealpha=0.9)


def _save(fig, path: str | Path) -> None:
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def plot_landscape(
    panels: Sequence[Panel], th: Thresholds, path: str | Path, *, bins: int = 50, prob_axis: str = "log"
) -> None:
    """Token density over (p(y), H̃), log colour scale, confident-conflict region hatched; one panel per set."""
    from matplotlib.colors import LogNorm

    px, py = _edges(panels, bins, prob_axis)
    fig, axes = _figure(len(panels))
    fig.suptitle("Entropy–probability landscape of the label tokens\n(confident conflicts hatched)", fontsize=11)
    for ax, panel in zip(axes, panels, strict=True):
        counts = _histogram(panel, px, py)
        if counts.sum() > 0:
            share = counts / counts.sum()
            norm = LogNorm(vmin=share[share > 0].min(), vmax=share.max())
            mesh = ax.pcolormesh(px, py, np.ma.masked_equal(share.T, 0), norm=norm, cmap="viridis")
            fig.colorbar(mesh, ax=ax, label="share of tokens")
        conflicts = conflict_mask(panel.entropy, panel.prob, th).mean() if len(panel.prob) else 0.0
        _mark_region(ax, th, f"{conflicts:.1%} of tokens", px)
        ax.set(title=f"{panel.title} ({len(panel.prob):,} tokens)", xlabel="target probability p(y)")
        ax.set_ylabel(f"normalized entropy ({th.entropy_column})")
    _save(fig, path)


def gradient_grid(panel: Panel, objective: str, px: np.ndarray, py: np.ndarray, stat: str) -> np.ndarray:
    """Mean (or summed) gradient norm per cell, NaN where a cell has no token. Shape: [bins_p, bins_H]."""
    if stat not in ("mean", "sum"):
        raise ValueError(f"gradient statistic must be 'mean' or 'sum', got {stat!r}")
    grad = panel.grads[objective]
    total = _histogram(panel, px, py, weights=grad)
    counts = _histogram(panel, px, py)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = total / counts if stat == "mean" else total
    return np.where(counts > 0, value, np.nan)


def plot_gradient_landscape(
    panel: Panel, th: Thresholds, path: str | Path, *, bins: int = 50, stat: str = "mean", prob_axis: str = "log"
) -> None:
    """Per-token logits-gradient norm ‖w · (softmax − onehot)‖ over (p(y), H̃), one panel per objective,
    one colour scale for all, so that the panels compare directly."""
    px, py = _edges([panel], bins, prob_axis)
    names = list(panel.grads or {})
    grids = [gradient_grid(panel, name, px, py, stat) for name in names]
    top = max([float(np.nanmax(g)) for g in grids if np.isfinite(g).any()] + [1e-12])
    conflicts = conflict_mask(panel.entropy, panel.prob, th)
    fig, axes = _figure(len(names))
    fig.suptitle(
        f"Gradient landscape ({panel.title}): {stat} ‖w·(softmax − onehot)‖ of the logits per cell", fontsize=11
    )
    for ax, name, grid in zip(axes, names, grids, strict=True):
        mesh = ax.pcolormesh(px, py, np.ma.masked_invalid(grid.T), vmin=0.0, vmax=top, cmap="magma")
        fig.colorbar(mesh, ax=ax, label=f"{stat} ‖∂ℓ/∂z‖ per cell")
        grad = panel.grads[name]
        share = float(grad[conflicts].sum() / grad.sum()) if grad.sum() > 0 else 0.0
        _mark_region(ax, th, f"{share:.1%} of the gradient norm", px)
        ax.set(title=f"{name} — {panel.title}", xlabel="target probability p(y)")
        ax.set_ylabel(f"normalized entropy ({th.entropy_column})")
    _save(fig, path)
