"""Pivot tables in Markdown: blocks x placements (top-1 error) and blocks x recipes (top-1 accuracy and
each block minus the plain network of the same recipe)."""

from __future__ import annotations

from ..attention_registry import DEFAULT_PLACEMENT, PLACEMENTS
from .aggregate import Row, budget_notes, build_rows, problems
from .render import SIGNIFICANT, _paired_cells
from .runs import NO_RECIPE, Run, _attention_order, block_placement, run_recipe


# ------------------------------------------------------- blocks x placements
def row_placement(row: Row) -> tuple[str, str]:
    """The row's block and where it sits: the placement its runs chose, else the block's own; "none" for the
    plain network."""
    name, _, placement = str(row.att_type).partition("@")
    if name == "none":
        return name, "none"
    return name, placement or block_placement(name) or DEFAULT_PLACEMENT


def placement_pivot(rows: list[Row], caption: str | None = None) -> str:
    """Markdown: one table per (data set, depth), a row per block, a column per placement, top-1 error.

    Each cell is the mean top-1 error (± std over seeds, and the number of seeds); the block's own
    placement is marked with †, and the lowest error of each block is in bold. The plain network
    (att_type=none) is the first row, for reference.
    """
    placements = list(PLACEMENTS)
    tables: dict[tuple, dict[str, dict[str, Row]]] = {}
    for row in rows:
        name, placement = row_placement(row)
        tables.setdefault((row.dataset, row.depth, row.network_name), {}).setdefault(name, {})[placement] = row
    text = []
    for (dataset, _, network), blocks in sorted(tables.items(), key=lambda item: (str(item[0][0]), item[0][1] or 0,
                                                                                   item[0][2])):
        text += [f"**{dataset}, {network}**: top-1 error (%), mean ± std over seeds (seeds); "
                 "† the block's own placement; bold: the block's best placement.", "",
                 "| Block | " + " | ".join(placements) + " | best |", "|---|" + "---|" * (len(placements) + 1)]
        for name in sorted(blocks, key=lambda n: _attention_order(n)):
            cells = blocks[name]
            if name == "none":
                err, std = cells["none"].err("err1")
                text.append(f"| none (plain) | {_pivot_cell(err, std, len(cells['none'].completed))} "
                            + "| " * len(placements) + "|")
                continue
            means = {p: cells[p].err("err1")[0] for p in placements if p in cells}
            measured = {p: m for p, m in means.items() if m is not None}
            best = min(measured, key=measured.get) if measured else None
            own = block_placement(name)
            row_cells = []
            for p in placements:
                if p not in cells:
                    row_cells.append("—")
                    continue
                err, std = cells[p].err("err1")
                row_cells.append(_pivot_cell(err, std, len(cells[p].completed), bold=p == best and len(measured) > 1)
                                 + (" †" if p == own else ""))
            text.append(f"| {name} | " + " | ".join(row_cells) + f" | {best or '—'} |")
        text.append("")
    if caption:
        text += [caption, ""]
    budget = budget_notes(run for row in rows for run in row.runs)
    if budget:
        text += [*budget, ""]
    issues = problems(rows)
    if issues:
        text += ["Runs not completed:", *(f"- {line}" for line in issues), ""]
    return "\n".join(text)


def _pivot_cell(err: float | None, std: float | None, seeds: int, bold: bool = False) -> str:
    if err is None:
        return "–"
    value = f"{err:.2f}" + (f" ± {std:.2f}" if std is not None else "")
    return (f"**{value}**" if bold else value) + f" ({seeds})"


# ------------------------------------------------------------ blocks x recipes
RECIPE_LEGEND = ("vs plain: the block's top-1 accuracy minus the plain ResNet's trained with the same recipe "
                 "(same data and depth), in points, averaged over the seeds both ran (paired by seed; n: how many), "
                 "with its 95% interval mean ± t(0.975, n-1) sd/sqrt(n); " + SIGNIFICANT + " the interval excludes 0; "
                 "n/a: fewer than 2 pairs.")


def _recipe_order(recipe: str) -> tuple:
    """The papers' recipe first (the reference), then the others by name, runs without a recipe last."""
    return (recipe != "paper", recipe == NO_RECIPE, recipe)


def recipe_rows(runs: list[Run]) -> dict[str, list[Row]]:
    """Per recipe, one row per architecture; a block's plain baseline is the plain network of its own recipe."""
    by_recipe: dict[str, list[Run]] = {}
    for run in runs:
        by_recipe.setdefault(run_recipe(run), []).append(run)
    return {recipe: build_rows(by_recipe[recipe]) for recipe in sorted(by_recipe, key=_recipe_order)}


def _accuracy_cell(row: Row | None) -> str:
    """Top-1 accuracy, mean ± std over the completed seeds, and how many: ``80.00 ± 2.00 (3)``."""
    if row is None:
        return "—"
    err, std = row.err("err1")
    seeds = sum(run.err1 is not None for run in row.completed)
    return _pivot_cell(None if err is None else 100.0 - err, std, seeds)


def _vs_plain_cell(row: Row | None) -> str:
    if row is None or row.vs_plain is None:
        return "—" if row is None else "–"
    text, pairs = _paired_cells(row.vs_plain)
    return text if text == "n/a" else f"{text} (n={pairs})"


def recipe_pivot(runs: list[Run], caption: str | None = None) -> str:
    """Markdown: one table per (data set, depth), a row per block, a column per recipe (top-1 accuracy),
    and per recipe the block's paired difference from the plain network trained with that recipe.

    The question it answers: does a block's gain over the plain network hold under every recipe?
    The plain network is the first row.
    """
    per_recipe = recipe_rows(runs)
    recipes = list(per_recipe)
    tables: dict[tuple, dict[str, dict[str, Row]]] = {}
    for recipe, rows in per_recipe.items():
        for row in rows:
            tables.setdefault((row.dataset, row.depth, row.network_name), {}).setdefault(str(row.att_type), {})[
                recipe] = row
    text = []
    for (dataset, _, network), blocks in sorted(tables.items(), key=lambda item: (str(item[0][0]), item[0][1] or 0,
                                                                                   item[0][2])):
        header = ["Block", *recipes, *(f"{recipe}: vs plain (95% CI)" for recipe in recipes)]
        text += [f"**{dataset}, {network}**: top-1 accuracy (%), mean ± std over seeds (seeds), per recipe; "
                 "then each block minus the plain network of the same recipe.", "",
                 f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
        for name in sorted(blocks, key=_attention_order):
            cells = blocks[name]
            label = "none (plain)" if name == "none" else name
            text.append(f"| {label} | " + " | ".join([*(_accuracy_cell(cells.get(r)) for r in recipes),
                                                      *(_vs_plain_cell(cells.get(r)) for r in recipes)]) + " |")
        text.append("")
    text += [RECIPE_LEGEND, ""]
    if caption:
        text += [caption, ""]
    budget = budget_notes(runs)
    if budget:
        text += [*budget, ""]
    issues = [f"{recipe}: {line}" for recipe, rows in per_recipe.items() for line in problems(rows)]
    if issues:
        text += ["Runs not completed:", *(f"- {line}" for line in issues), ""]
    return "\n".join(text)
