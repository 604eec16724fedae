"""A sweep's report as one self-contained HTML page: inline CSS, figures as data URIs, no script and no link
to anything outside the file, so it opens anywhere (a laptop, a mail attachment) with no network."""

from __future__ import annotations

import base64
import html
import re
import time
from pathlib import Path

from ..attention_registry import PLACEMENTS
from .aggregate import budget_notes, evaluation_notes
from .pivots import placement_pivot, recipe_pivot
from .report import (Section, attention_images, cost_points, curves, header_facts, placement_points, run_state,
                     sections, speed_devices)
from .runs import Run

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b; margin: 0;
       background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 8px; padding-top: 12px; border-top: 2px solid #ddd; }
h3 { font-size: 16px; margin: 24px 0 6px; }
.sub { color: #555; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e4e4e4; text-align: right; vertical-align: top; }
th { background: #f3f3f3; font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
table.facts th { text-align: left; background: none; color: #555; font-weight: 500; }
table.facts td { text-align: left; }
.notes { color: #444; font-size: 13px; }
.notes li { margin: 2px 0; }
.failed { color: #a40000; }
.running { color: #8a5a00; }
figure { margin: 8px 0 16px; }
figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 13px; }
.maps { display: flex; flex-wrap: wrap; gap: 12px; }
.maps figure { margin: 0; }
.maps img { image-rendering: pixelated; width: 256px; }
code { font-size: 12px; background: #f3f3f3; padding: 1px 4px; }
"""


def data_uri(kind: str, payload: bytes | str) -> str:
    """``data:<kind>;base64,...`` of ``payload`` (SVG text or PNG bytes)."""
    raw = payload.encode("utf-8") if isinstance(payload, str) else payload
    return f"data:{kind};base64,{base64.b64encode(raw).decode('ascii')}"


def _figure(kind: str, payload: bytes | str, alt: str, caption: str | None = None) -> str:
    text = f'<figure><img src="{data_uri(kind, payload)}" alt="{html.escape(alt)}">'
    if caption:
        text += f"<figcaption>{html.escape(caption)}</figcaption>"
    return text + "</figure>"


def _table(header: list[str] | None, rows: list[list[str]], css: str = "results") -> str:
    """A table of text cells (escaped); without ``header``, no head row."""
    head = "" if header is None else \
        "<thead><tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in header) + "</tr></thead>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css}">{head}<tbody>{body}</tbody></table>'


def markdown_to_html(text: str) -> str:
    """The pivot tables' Markdown (tables, bold, paragraphs and lists) as HTML."""
    parts, table, items = [], [], []

    def inline(value: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(value))

    def flush() -> None:
        if table:
            head, *body = [[inline(cell.strip()) for cell in line.strip().strip("|").split("|")] for line in table
                           if not re.fullmatch(r"\|(\s*-+\s*\|)+", line.strip())]
            parts.append("<table class=\"pivot\"><thead><tr>" + "".join(f"<th>{c}</th>" for c in head)
                         + "</tr></thead><tbody>" + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>"
                                                           for row in body) + "</tbody></table>")
            table.clear()
        if items:
            parts.append("<ul class=\"notes\">" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if line.startswith("- "):
            items.append(line[2:])
            continue
        flush()
        if line.strip():
            parts.append(f"<p class=\"notes\">{inline(line)}</p>")
    flush()
    return "\n".join(parts)


def shown_path(path: str | Path, folders: list[str | Path]) -> str:
    """``path`` relative to the first of the report's folders that holds it (the folder's own name first), else
    as recorded."""
    for folder in folders:
        try:
            return str(Path(folder).name / Path(path).resolve().relative_to(Path(folder).resolve()))
        except ValueError:
            continue
    return str(path)


def _runs_table(runs: list[Run], folders: list[str | Path], histories: dict[str, list[dict]]) -> str:
    rows = []
    for run in sorted(runs, key=lambda r: (str(r.att_type), r.seed if r.seed is not None else -1, r.path)):
        state = run_state(run, histories[run.path])
        final = run.record.get("final") or {}
        top1 = f"{final['acc1']:.2f}" if run.status == "completed" and final.get("acc1") is not None else "–"
        css = "failed" if run.status == "failed" else "running" if run.status == "running" else ""
        error = (run.error or "").strip().splitlines()
        cells = [shown_path(run.path, folders), str(run.att_type), "–" if run.seed is None else str(run.seed), state, top1,
                 error[0] if error else ""]
        rows.append(f'<tr class="{css}">' + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    head = "".join(f"<th>{name}</th>" for name in ("Run folder (under the report's folders)", "Attention", "Seed", "State", "Top-1 (%)", "Error"))
    return f'<table class="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _section_html(section: Section, folders: list[str | Path], with_maps: bool) -> str:
    out = [f"<section id=\"data-{html.escape(section.dataset)}\"><h2>{html.escape(section.dataset)}: "
           f"{len(section.runs)} run{'s' if len(section.runs) != 1 else ''}</h2>"]
    out.append(_table(section.header, section.cells))
    if section.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{html.escape(line)}</li>" for line in section.notes)
                   + "</ul>")
    if section.not_completed:
        out.append('<h3>Runs not completed</h3><ul class="notes failed">'
                   + "".join(f"<li>{html.escape(line)}</li>" for line in section.not_completed) + "</ul>")
    from . import figures

    points = cost_points(section.rows)
    if points:
        devices = speed_devices(section.rows)
        out.append("<h3>Accuracy against cost</h3>")
        out.append(_figure("image/svg+xml", figures.cost_figure(points, devices[0] if len(devices) == 1 else None),
                           "top-1 accuracy against params, GFLOPs and training images/s",
                           "One point per row of the table: the mean over its seeds, error bars one standard deviation "
                           "(images/s: the runs' training throughput"
                           + (f" on {', '.join(devices)}" if devices else "") + "); hollow: the published numbers."))
    accuracy, loss = (curves(section.rows, key, section.histories) for key in ("val_acc1", "train_loss"))
    if accuracy or loss:
        out.append("<h3>Learning curves</h3>")
        out.append(_figure("image/svg+xml", figures.curves_figure(accuracy, loss),
                           "validation top-1 and training loss per epoch",
                           "Each row's mean over its runs (n), the band from the lowest to the highest run; runs "
                           "still going count with the epochs they have logged."))
    differences = [(row.label, row.vs_plain) for row in section.rows if row.vs_plain is not None]
    if differences:
        out.append("<h3>Against the plain network</h3>")
        if any(difference.mean is not None for _, difference in differences):
            out.append(_figure("image/svg+xml", figures.paired_figure(differences),
                               "paired differences from the plain network with 95% intervals",
                               "Each block's top-1 accuracy minus the plain network's, per seed both ran, averaged (n: "
                               "pairs), with its 95% t interval; green: a gain whose interval excludes 0, red: a loss "
                               "whose interval excludes 0, grey: not told apart from 0."))
        short = [f"{label}: {d.pairs} pair{'s' if d.pairs != 1 else ''}" for label, d in differences if d.mean is None]
        if short:
            out.append('<p class="notes">No interval under 2 seeds paired with the plain network: '
                       f"{html.escape('; '.join(short))}.</p>")
    if section.pivot == "placement":
        out.append("<h3>Placements</h3>")
        out.append(_figure("image/svg+xml", figures.placement_figure(placement_points(section.rows),
                                                                     list(PLACEMENTS)),
                           "top-1 error per placement", "Top-1 error (%) per placement, mean ± std over seeds; the "
                           "dashed line: the plain network."))
        out.append(markdown_to_html(placement_pivot(section.rows)))
    elif section.pivot == "recipe":
        out.append("<h3>Recipes</h3>")
        out.append(markdown_to_html(recipe_pivot(section.runs)))
    if with_maps:
        maps = []
        for row in section.rows:
            for run in sorted(row.completed, key=lambda r: r.seed if r.seed is not None else -1)[:1]:
                images = attention_images(run)
                if images:
                    maps.append(f"<h4>{html.escape(row.label)} (seed {run.seed})</h4><div class=\"maps\">"
                                + "".join(_figure("image/png", png, f"{row.label} attention, {stage}", stage)
                                          for stage, png in images.items()) + "</div>")
        if maps:
            out.append("<h3>Attention maps</h3><p class=\"notes\">The last maps each row's first seed logged "
                       "(trainer.attention_maps_every), on the same validation images.</p>" + "".join(maps))
    out.append("<h3>Runs</h3>")
    out.append(_runs_table(section.runs, folders, section.histories))
    out.append("</section>")
    return "\n".join(out)


def report_html(runs: list[Run], folders: list[str | Path], paper_name: str | None = None, all_rows: bool = False,
                columns: list[str] | None = None, title: str | None = None, with_maps: bool = True) -> str:
    """The page: a header (budget, devices, code, recipe) and one section per data set."""
    parts = sections(runs, paper_name, all_rows, columns)
    facts = header_facts(runs)
    budget = budget_notes(runs)
    if budget:
        facts.insert(1, ("Budget", " ".join(budget)))
    evaluated = evaluation_notes([row for part in parts for row in part.rows])
    if evaluated:
        facts.append(("Evaluation", " ".join(evaluated)))
    title = title or "attn-resnet report"
    where = ", ".join(str(folder) for folder in folders)
    head = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body><main>")
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class=\"sub\">{len(runs)} run{'s' if len(runs) != 1 else ''} under {html.escape(where)}; written "
            f"{time.strftime('%Y-%m-%d %H:%M')}.</p>",
            _table(None, [list(fact) for fact in facts], css="facts")]
    if len(parts) > 1:
        body.append("<p>Data sets: " + ", ".join(f"<a href=\"#data-{html.escape(p.dataset)}\">"
                                                 f"{html.escape(p.dataset)}</a>" for p in parts) + "</p>")
    body += [_section_html(part, folders, with_maps) for part in parts]
    return head + "\n".join(body) + "\n</main></body></html>\n"
