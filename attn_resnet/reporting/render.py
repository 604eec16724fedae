"""Rows -> text: the architecture table in Markdown, CSV or LaTeX, beside the published numbers."""

from __future__ import annotations

import csv
import io
import textwrap

from ..attention_registry import DEFAULT_PLACEMENT
from .aggregate import Row, budget_notes, evaluation_notes, mixed_experiments, mixed_recipes, problems
from .stats import PairedDifference

# text: aligned columns that fit the terminal's width (the default on a terminal); md, csv, latex: for files.
FORMATS = ("text", "md", "csv", "latex")


def _fmt(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _mean_std(mean: float | None, std: float | None, undefined: bool = False) -> str:
    if mean is None:
        return "n/a" if undefined else "–"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _paper_value(row: Row, key: str) -> float | None:
    if row.paper is None or row.paper.get(key) is None:
        return None
    return float(row.paper[key])


def _paper_cell(row: Row, value: float | None) -> str:
    """A published number; "not available" for a row the paper has whose numbers were not available."""
    if value is None and row.paper is not None and row.paper.get("published") is False:
        return "not available"
    return _fmt(value)


def _delta(ours: float | None, published: float | None) -> float | None:
    return None if ours is None or published is None else ours - published


HEADER = ["Model", "Data", "Params (M)", "GFLOPs", "Top-1 err (%)", "Top-5 err (%)", "Seeds",
          "Paper top-1", "Δ top-1", "Paper top-5", "Δ top-5", "Top-1 acc vs plain (95% CI)", "Pairs"]
# The architecture table's columns by the short names ``--columns`` takes, in HEADER's order.
COLUMNS = dict(zip(("model", "data", "params", "gflops", "top1", "top5", "seeds", "paper_top1", "delta_top1",
                    "paper_top5", "delta_top5", "vs_plain", "pairs"), HEADER))
EMPTY_CELLS = ("–", "—", "")
SIGNIFICANT = "*"
PAIRED_LEGEND = ("Top-1 acc vs plain: the block's top-1 accuracy minus the plain ResNet's (same data and depth), "
                 "in points, averaged over the seeds both ran (paired by seed; Pairs: how many), with its 95% "
                 "interval mean ± t(0.975, n-1) sd/sqrt(n); " + SIGNIFICANT + " the interval excludes 0 "
                 "(a gain if positive, a loss if negative); n/a: fewer than 2 pairs.")


def _paired_cells(difference: PairedDifference | None) -> list[str]:
    """``+2.00 [+1.75, +2.25] *`` and the number of pairs; "–" for a row with nothing to pair with."""
    if difference is None:
        return ["–", "–"]
    if difference.mean is None:
        return ["n/a", str(difference.pairs)]
    text = f"{difference.mean:+.2f} [{difference.low:+.2f}, {difference.high:+.2f}]"
    return [text + (f" {SIGNIFICANT}" if difference.excludes_zero else ""), str(difference.pairs)]


def table_cells(row: Row) -> list[str]:
    err1, std1 = row.err("err1")
    err5, std5 = row.err("err5")
    paper1, paper5 = _paper_value(row, "err1"), _paper_value(row, "err5")
    seeds = f"{len(row.completed)}" + (f"/{len(row.runs)}" if len(row.runs) != len(row.completed) else "")
    return [row.label, str(row.dataset), _fmt(row.params_m), _fmt(row.gflops, 3), _mean_std(err1, std1),
            _mean_std(err5, std5, undefined=row.undefined("err5")), seeds, _paper_cell(row, paper1),
            _fmt(_delta(err1, paper1), signed=True), _paper_cell(row, paper5), _fmt(_delta(err5, paper5), signed=True),
            *_paired_cells(row.vs_plain)]


def _rounded(value: float | None, digits: int = 2) -> float | None:
    """``value`` to the digits the Markdown table prints (no ``29.700000000000003`` in a CSV file)."""
    return None if value is None else round(float(value), digits)


def csv_record(row: Row) -> dict:
    """The row as numbers, rounded as the Markdown table prints them (errors 2 decimals, GFLOPs 3)."""
    err1, std1 = row.err("err1")
    err5, std5 = row.err("err5")
    paper1, paper5 = _paper_value(row, "err1"), _paper_value(row, "err5")
    att_type, _, placement = str(row.att_type).partition("@")
    paired = row.vs_plain or PairedDifference(0)
    r = _rounded
    return {"model": row.label, "data": row.dataset, "depth": row.depth, "network": row.network_name,
            "att_type": row.att_type if row.att_type is None else att_type,
            "att_placement": placement or DEFAULT_PLACEMENT,
            "params_m": r(row.params_m), "gflops": r(row.gflops, 3), "err1_mean": r(err1), "err1_std": r(std1),
            "err5_mean": r(err5), "err5_std": r(std5), "seeds_completed": len(row.completed), "runs": len(row.runs),
            "paper_err1": paper1, "delta_err1": r(_delta(err1, paper1)), "paper_err5": paper5,
            "delta_err5": r(_delta(err5, paper5)), "acc1_vs_plain": r(paired.mean),
            "acc1_vs_plain_low": r(paired.low), "acc1_vs_plain_high": r(paired.high),
            "pairs": paired.pairs if row.vs_plain is not None else None,
            "acc1_vs_plain_excludes_0": paired.excludes_zero if paired.mean is not None else None}


def column_indices(header: list[str], cell_rows: list[list[str]], columns: list[str] | None = None,
                   names: dict[str, str] | None = None) -> list[int]:
    """Which columns to show: those ``columns`` names (short names of ``names``, or headers), in that order; by
    default every column that has a value in some row (a table without ``--paper`` has no empty paper columns).
    The first column (the row's label) is always kept."""
    if columns:
        by_name = {**{header_text: header_text for header_text in header}, **(names or {})}
        unknown = [name for name in columns if name not in by_name or by_name[name] not in header]
        if unknown:
            choices = ", ".join(name for name, header_text in (names or {}).items() if header_text in header) \
                or ", ".join(map(repr, header))
            raise ValueError(f"Unknown column {', '.join(map(repr, unknown))}. Valid choices: {choices}.")
        wanted = [header.index(by_name[name]) for name in columns]
        return [0, *(index for index in dict.fromkeys(wanted) if index != 0)]
    return [index for index in range(len(header))
            if index == 0 or any(cells[index] not in EMPTY_CELLS for cells in cell_rows)]


def text_table(header: list[str], cell_rows: list[list[str]], width: int = 100) -> str:
    """Aligned columns that fit in ``width`` characters: headers wrap at spaces, and a table still too wide is
    split into parts that each repeat the first column (the row's label)."""
    cell_widths = [max([0, *(len(cells[index]) for cells in cell_rows)]) for index in range(len(header))]
    wrapped = []
    for index, title in enumerate(header):
        longest_word = max(len(word) for word in title.split()) if title.split() else 0
        wrapped.append(textwrap.wrap(title, max(cell_widths[index], longest_word, 1)) or [""])
    widths = [max(cell_widths[index], *(len(line) for line in wrapped[index])) for index in range(len(header))]
    parts, current = [], [0]
    for index in range(1, len(header)):
        if current != [0] and sum(widths[i] + 2 for i in current) + widths[index] > width:
            parts.append(current)
            current = [0]
        current.append(index)
    parts.append(current)
    blocks = []
    for part in parts:
        height = max(len(wrapped[index]) for index in part)
        lines = []
        for line_number in range(height):
            titles = [(wrapped[i][line_number] if line_number < len(wrapped[i]) else "") for i in part]
            lines.append(_aligned(titles, [widths[i] for i in part], part))
        lines.append("  ".join("-" * widths[i] for i in part))
        lines += [_aligned([cells[i] for i in part], [widths[i] for i in part], part) for cells in cell_rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _aligned(values: list[str], widths: list[int], indices: list[int]) -> str:
    """The first column to the left, numbers to the right."""
    return "  ".join(value.ljust(width) if index == 0 else value.rjust(width)
                     for value, width, index in zip(values, widths, indices)).rstrip()


def table_notes(rows: list[Row], paper: dict | None = None, caption: str | None = None) -> list[str]:
    """The lines under the architecture table: caption, budget, the paired column's legend, the published
    source, mixed experiments or recipes, how the runs were evaluated."""
    paired = any(row.vs_plain is not None for row in rows)
    # The budget right under the table: a table of short runs must not pass for one of the full recipe.
    budget = budget_notes(run for row in rows for run in row.runs)
    notes = [line for line in (caption, *budget, paired and PAIRED_LEGEND, paper and f"Published: {paper['source']}",
                               paper and paper.get("note")) if line]
    return notes + mixed_experiments(rows) + mixed_recipes(rows) + evaluation_notes(rows)


def render(rows: list[Row], fmt: str = "md", paper: dict | None = None, caption: str | None = None,
           header: list[str] | None = None, cells=table_cells, records=csv_record, columns: list[str] | None = None,
           width: int = 100) -> str:
    """The table in aligned text, Markdown, CSV or LaTeX, with a caption and the list of runs that did not complete.

    ``columns`` picks columns by short name (``COLUMNS``) or header; by default Markdown and LaTeX print every
    column, and text leaves out those without a value in any row. CSV always writes every field.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}. Valid choices: {', '.join(FORMATS)}.")
    header = header or HEADER
    architecture = cells is table_cells
    issues = problems(rows) if architecture else []
    if fmt == "csv":
        if columns:
            raise ValueError("--columns picks the columns of the text, Markdown and LaTeX tables; CSV writes every "
                             "field (select columns in the program that reads it).")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(records(rows[0]).keys()) if rows else ["model"])
        writer.writeheader()
        for row in rows:
            writer.writerow(records(row))
        return buffer.getvalue()
    cell_rows = [cells(row) for row in rows]
    keep = column_indices(header, cell_rows, columns, COLUMNS if architecture else None) \
        if columns or fmt == "text" else list(range(len(header)))
    header = [header[i] for i in keep]
    cell_rows = [[row_cells[i] for i in keep] for row_cells in cell_rows]
    notes = table_notes(rows, paper, caption) if architecture else \
        [line for line in (caption, paper and f"Published: {paper['source']}", paper and paper.get("note")) if line]
    if fmt == "text":
        text = text_table(header, cell_rows, width)
        if notes:
            text += "\n" + "\n".join(textwrap.fill(line, width) for line in notes) + "\n"
        if issues:
            text += "\nRuns not completed:\n" + "\n".join(
                textwrap.fill(line, width, initial_indent="- ", subsequent_indent="  ") for line in issues) + "\n"
        return text
    if fmt == "md":
        lines = [f"| {' | '.join(header)} |", "|" + "|".join("---" for _ in header) + "|"]
        lines += [f"| {' | '.join(row_cells)} |" for row_cells in cell_rows]
        text = "\n".join(lines) + "\n"
        if notes:
            text += "\n" + "\n".join(notes) + "\n"
        if issues:
            text += "\nRuns not completed:\n" + "\n".join(f"- {line}" for line in issues) + "\n"
        return text
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
             r"\toprule", " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(c) for c in row_cells) + r" \\" for row_cells in cell_rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines.append(r"\caption{" + _latex_escape(" ".join(notes)) + "}")
    lines.append(r"\end{table}")
    text = "\n".join(lines) + "\n"
    if issues:
        text += "\n".join(f"% not completed: {_latex_escape(line)}" for line in issues) + "\n"
    return text


def _latex_escape(text: str) -> str:
    return (text.replace("%", r"\%").replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("_", r"\_")
            .replace("–", "--"))
