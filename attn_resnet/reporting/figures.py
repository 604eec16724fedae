"""The report's figures as SVG text (matplotlib, drawn off-screen): accuracy against cost, learning curves with
their spread over seeds, the paired differences from the plain network, and top-1 error per placement.

Each function takes the plain data of ``report`` and returns one ``<svg>`` document with its text drawn as
paths, so the page needs no font and no file beside it.
"""

from __future__ import annotations

import io

from .report import CostPoint, Curve
from .stats import PairedDifference


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("The report draws its figures with matplotlib, which is not installed: "
                          "pip install 'attn-resnet[report]' (or pip install matplotlib).") from error
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "attn-resnet", "svg.fonttype": "path", "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # the XML declaration and doctype are not needed inline


def _colors(labels: list[str]) -> dict[str, str]:
    """One colour per label, the same in every figure of a section (labels in their table order)."""
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
               "#7f7f7f"]
    return {label: palette[index % len(palette)] for index, label in enumerate(labels)}


def cost_figure(points: list[CostPoint], device: str | None) -> str:
    """Top-1 accuracy against params, GFLOPs and training images/s; error bars: std over seeds; hollow markers:
    the paper's numbers."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    axes_spec = [("params_m", None, "params (M)"), ("gflops", None, "GFLOPs (per image)"),
                 ("images_per_sec", "images_per_sec_std", f"training images/s{f' ({device})' if device else ''}")]
    axes_spec = [spec for spec in axes_spec if any(getattr(p, spec[0]) is not None for p in points)]
    figure, axes = plt.subplots(1, max(len(axes_spec), 1), figsize=(3.6 * max(len(axes_spec), 1), 3.2),
                                squeeze=False)
    colors = _colors(list(dict.fromkeys(p.label for p in points)))
    for axis, (key, spread, title) in zip(axes[0], axes_spec):
        for point in points:
            x = getattr(point, key)
            if x is None:
                continue
            color = colors[point.label]
            axis.errorbar(x, point.acc1, yerr=point.acc1_std, xerr=getattr(point, spread) if spread else None,
                          fmt="o", color=color, mfc="white" if point.published else color, capsize=3,
                          label=point.legend)
        axis.set_xlabel(title)
        axis.xaxis.set_major_locator(MaxNLocator(nbins=4))
        axis.set_ylabel("top-1 accuracy (%)")
        axis.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 4),
                      frameon=False)
    return _svg(figure)


def curves_figure(accuracy: list[Curve], loss: list[Curve]) -> str:
    """Validation top-1 and training loss per epoch: each row's mean over its runs, with the min-max band."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
    colors = _colors(list(dict.fromkeys(curve.label for curve in [*accuracy, *loss])))
    for axis, drawn, title in ((axes[0], accuracy, "validation top-1 (%)"), (axes[1], loss, "training loss")):
        for curve in drawn:
            color = colors[curve.label]
            axis.plot(curve.epochs, curve.mean, marker="o" if len(curve.epochs) < 12 else None, ms=3, color=color,
                      label=f"{curve.label} (n={max(curve.runs)})")
            if max(curve.runs) > 1:
                axis.fill_between(curve.epochs, curve.low, curve.high, color=color, alpha=0.2, linewidth=0)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(title)
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels() if accuracy else axes[1].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 3),
                      frameon=False)
    return _svg(figure)


def paired_figure(differences: list[tuple[str, PairedDifference]]) -> str:
    """Each block's top-1 accuracy minus the plain network's, paired by seed: the mean and its 95% interval."""
    plt = _pyplot()
    drawn = [(label, d) for label, d in differences if d.mean is not None]
    figure, axis = plt.subplots(figsize=(6.0, 0.5 + 0.45 * max(len(drawn), 1)))
    for position, (label, difference) in enumerate(reversed(drawn)):
        color = "#2ca02c" if difference.low > 0 else "#d62728" if difference.high < 0 else "#555555"
        axis.errorbar(difference.mean, position,
                      xerr=[[difference.mean - difference.low], [difference.high - difference.mean]], fmt="o",
                      color=color, capsize=4)
    axis.set_yticks(range(len(drawn)), [f"{label} (n={d.pairs})" for label, d in reversed(drawn)])
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_xlabel("top-1 accuracy minus the plain network's (points), 95% interval")
    axis.grid(axis="x", alpha=0.3)
    return _svg(figure)


def placement_figure(points: dict[str, dict[str, tuple[float, float | None]]], placements: list[str]) -> str:
    """Top-1 error per placement, one line per block, with the plain network as a horizontal line."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.0, 3.2))
    plain = points.get("none", {}).get("none")
    blocks = [name for name in points if name != "none"]
    colors = _colors(blocks)
    for offset, name in enumerate(blocks):
        measured = [(placements.index(p), *points[name][p]) for p in placements if p in points[name]]
        xs = [x + 0.06 * (offset - (len(blocks) - 1) / 2) for x, _, _ in measured]
        axis.errorbar(xs, [err for _, err, _ in measured], yerr=[std or 0.0 for _, _, std in measured], fmt="o-",
                      color=colors[name], capsize=3, label=name)
    if plain is not None:
        axis.axhline(plain[0], color="black", linestyle="--", linewidth=0.8, label="plain network")
    axis.set_xticks(range(len(placements)), placements)
    axis.set_xlabel("placement (model.att_placement)")
    axis.set_ylabel("top-1 error (%)")
    axis.grid(alpha=0.3)
    axis.legend(frameon=False, fontsize=8)
    return _svg(figure)
