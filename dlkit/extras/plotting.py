"""Small plotting and table helpers for the experiments; matplotlib (Agg) loads on first use.

A panel is a dict: {"title", "xlabel", "ylabel", "series": {label: (x, y)}, "logx", "logy",
"marks": {label: (x, y)}} where marks are drawn as crosses (e.g. where a run diverged).
"""

import math
import pathlib
from collections.abc import Sequence

import numpy as np


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, dpi: int) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return path


def _draw_panel(ax, panel: dict) -> None:
    for label, (x, y) in panel.get("series", {}).items():
        ax.plot(np.asarray(x), np.asarray(y), label=label, lw=1.4)
    for label, (x, y) in panel.get("marks", {}).items():
        ax.plot([x], [y], "kx", ms=9, mew=2, label=label)
    ax.set_xscale("log" if panel.get("logx") else "linear")
    ax.set_yscale("log" if panel.get("logy") else "linear")
    ax.set(title=panel.get("title", ""), xlabel=panel.get("xlabel", ""))
    ax.set_ylabel(panel.get("ylabel", ""))
    ax.grid(alpha=0.3)
    if panel.get("series") or panel.get("marks"):
        ax.legend(fontsize=7)


def line_plots(path, panels: Sequence[dict], ncols: int = 2, dpi: int = 90, title: str = ""):
    """One PNG with a grid of line-plot panels; returns the path."""
    if not panels:
        raise ValueError("line_plots: no panels to draw")
    plt = pyplot()
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        _draw_panel(ax, panel)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, dpi)


def image_grid(path, images, titles=(), ncols: int = 5, cmap: str = "RdBu_r", dpi: int = 90):
    """Images (N, H, W) in a grid, each on a colour scale symmetric about 0; returns the path."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"image_grid: images must be (N, H, W), got {images.shape}")
    plt = pyplot()
    n = len(images)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.7 * ncols, 1.9 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            lim = float(np.abs(images[i]).max()) or 1.0
            ax.imshow(images[i], cmap=cmap, vmin=-lim, vmax=lim)
            if i < len(titles):
                ax.set_title(str(titles[i]), fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi)


def roofline(
    path, peak_flops, peak_bytes_per_sec, points, extra_roofs=None, title="", dpi: int = 90
):
    """Roofline min(peak, I * bandwidth) on log-log axes with points (label, intensity, FLOP/s);
    extra_roofs {label: bytes/s} (e.g. a cache's bandwidth) are drawn dashed."""
    plt = pyplot()
    ridge = peak_flops / peak_bytes_per_sec
    xs = [p[1] for p in points if p[1] > 0] + [ridge]
    grid = np.geomspace(min(xs) / 4, max(xs) * 4, 200)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.plot(
        grid, np.minimum(peak_flops, grid * peak_bytes_per_sec), "k-", lw=2, label="memory roof"
    )
    for label, bw in (extra_roofs or {}).items():
        ax.plot(grid, np.minimum(peak_flops, grid * bw), "k--", lw=1, label=label)
    ax.axvline(ridge, color="gray", ls=":", lw=1)
    ax.text(ridge, peak_flops * 1.15, f"ridge {ridge:.1f} FLOP/B", ha="center", fontsize=8)
    markers = "osD^v<>pPX*h"
    for i, (label, intensity, flops_per_sec) in enumerate(points):
        if intensity > 0 and flops_per_sec > 0:
            ax.plot([intensity], [flops_per_sec], markers[i % len(markers)], ms=7, label=label)
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP / byte)", title=title)
    ax.set_ylabel("FLOP/s")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return _save(fig, path, dpi)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as a markdown table; floats to 4 significant digits."""
    if not rows:
        raise ValueError("markdown_table: no rows")
    columns = list(columns or rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(path, rows: Sequence[dict], columns: Sequence[str] | None = None, title: str = ""):
    """Writes markdown_table(rows) (under an optional '# title') to path; returns the text."""
    text = (f"# {title}\n\n" if title else "") + markdown_table(rows, columns)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
