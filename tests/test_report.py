"""The HTML report: real sweeps -> one self-contained page whose table equals paper_table.py's, whose figures
decode, and which lists every run, completed, failed, running or killed; the terminal table that fits."""

from __future__ import annotations

import base64
import html.parser
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from attn_resnet import reporting
from attn_resnet.reporting.report import _history_from_events, curves, run_state
from attn_resnet.runfiles import run_folder_in_use

from helpers import FAST, REPO, run_script, write_cifar10

pytest.importorskip("matplotlib")


class Page(html.parser.HTMLParser):
    """The parts of a report page a test checks: images, links, scripts, sections and tables (as cell text)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[dict] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.sections: list[str] = []
        self.tables: list[dict] = []  # {"class": ..., "rows": [[cell, ...], ...], "section": ...}
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(attrs)
        if "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "h2":
            self._in_h2 = True
            self.sections.append("")
        if tag == "table":
            self.tables.append({"class": attrs.get("class"), "rows": [],
                                "section": self.sections[-1] if self.sections else None})
        if tag == "tr":
            self._row = []
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.tables[-1]["rows"].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._in_h2:
            self.sections[-1] += data
        if self._cell is not None:
            self._cell.append(data)


def decode_image(source: str) -> str:
    """The kind of a ``data:`` image after decoding it fully (SVG parsed as XML, PNG decoded by Pillow)."""
    kind, _, payload = source.removeprefix("data:").partition(";base64,")
    raw = base64.b64decode(payload, validate=True)
    if kind == "image/svg+xml":
        root = ElementTree.fromstring(raw)
        assert root.tag.endswith("svg") and len(list(root.iter())) > 20
    else:
        from PIL import Image

        assert kind == "image/png"
        image = Image.open(io.BytesIO(raw))
        image.load()
        assert image.width > 1 and image.height > 1
    return kind


@pytest.fixture(scope="module")
def runs_folder(module_tmp):
    """Real runs of two data sets under one folder: a sweep of none and CBAM x seeds 0, 1 (2 epochs, attention
    maps logged), a sweep whose only job fails, and one CIFAR-10 run (tiny files in the official layout)."""
    root = module_tmp("report_runs")
    sweep = run_script("train.py", ["--multirun", *FAST, "trainer.epochs=2", "trainer.attention_maps_every=1",
                                    "model.att_type=none,CBAM", "seed=0,1", f"hydra.sweep.dir={root / 'sweep'}"],
                       timeout=600)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    failed = run_script("train.py", ["--multirun", *FAST, "model.depth=42", f"hydra.sweep.dir={root / 'failed'}"])
    assert failed.returncode != 0
    data = write_cifar10(root / "data", per_batch=8, test=20)
    cifar = run_script("train.py", ["data=cifar10", f"data.root={data}", "data.batch_size=8", "trainer.epochs=1",
                                    "trainer.progress=false", "data.num_workers=0",
                                    f"hydra.run.dir={root / 'cifar' / 'run'}"], timeout=600)
    assert cifar.returncode == 0, cifar.stderr[-2000:]
    return root


def test_report_lists_every_run_and_its_table_equals_paper_tables(runs_folder, tmp_path):
    out = tmp_path / "report.html"
    result = run_script("scripts/report.py", [str(runs_folder), "--out", str(out)], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = out.read_text()
    page = Page(text)
    runs = reporting.collect_runs(runs_folder)
    assert len(runs) == 6 and {run.status for run in runs} == {"completed", "failed"}

    # Self-contained: no script, no stylesheet or frame to fetch, every image embedded; links only within the page.
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert all(link.startswith("#") for link in page.links)
    assert "http://" not in text and "https://" not in text
    kinds = [decode_image(image["src"]) for image in page.images]
    assert kinds.count("image/png") == 4  # CBAM's attention maps: one per stage, of one seed
    assert kinds.count("image/svg+xml") >= 3 + 2  # synthetic: cost, curves, paired; cifar10: cost, curves

    # One section per data set; the runs table of each lists every run with its state.
    assert [name.split(":")[0] for name in page.sections] == ["cifar10", "synthetic"]
    listed = {row[0]: row for table in page.tables if table["class"] == "runs" for row in table["rows"][1:]}
    shown = {run.path: str(Path(run.path).relative_to(runs_folder.parent)) for run in runs}
    assert set(listed) == set(shown.values())
    failed = next(run for run in runs if run.status == "failed")
    assert listed[shown[failed.path]][3] == "failed" and "42" in listed[shown[failed.path]][5]
    for run in runs:
        if run.status == "completed":
            assert listed[shown[run.path]][4] == f"{run.record['final']['acc1']:.2f}"

    # The table of each section is paper_table.py's, less the columns with no value (the published ones here).
    for dataset in ("synthetic", "cifar10"):
        printed = run_script("scripts/paper_table.py", [str(runs_folder), "--where", f"data.name={dataset}",
                                                        "--format", "md"])
        assert printed.returncode == 0, printed.stderr
        md_lines = [line for line in printed.stdout.splitlines() if line.startswith("| ")]
        md_header = md_lines[0].strip("| ").split(" | ")
        md_rows = {cells[0]: dict(zip(md_header, cells)) for cells in
                   (line.strip("| ").split(" | ") for line in md_lines[1:])}
        table = next(t for t in page.tables if t["class"] == "results" and t["section"].startswith(dataset))
        header, *rows = table["rows"]
        assert "Paper top-1" not in header and "Δ top-5" not in header  # no --paper: empty columns left out
        assert set(header) < set(md_header)
        assert {row[0] for row in rows} == set(md_rows)
        for row in rows:
            assert dict(zip(header, row)) == {key: md_rows[row[0]][key] for key in header}
    synthetic = next(t for t in page.tables if t["class"] == "results" and t["section"].startswith("synthetic"))
    assert "Top-1 acc vs plain (95% CI)" in synthetic["rows"][0]  # two seeds paired with the plain network

    # The header: the budget and where the runs ran, from their results.json.
    facts = {row[0]: row[1] for row in next(t for t in page.tables if t["class"] == "facts")["rows"]}
    assert "2 epochs on 48 training images" in facts["Budget"] and "1 epoch on 40 training images" in facts["Budget"]
    record = next(run.record for run in runs if run.status == "completed")
    assert record["git_commit"] in facts["Commit"] and record["torch_version"] in facts["Versions"]
    assert "plain (no recipe feature on) (6 runs)" in facts["Recipe"]


def test_curves_are_the_mean_and_range_over_seeds_of_the_histories(runs_folder):
    runs = [run for run in reporting.collect_runs(runs_folder) if run.dataset == "synthetic"]
    rows = reporting.build_rows(runs)
    drawn = {curve.label: curve for curve in curves(rows, "val_acc1")}
    assert set(drawn) == {"ResNet-18", "ResNet-18 + CBAM"}
    for row in rows:
        if not row.completed:  # ResNet-42: failed, no curve
            assert row.label not in drawn
            continue
        histories = [run.record["history"] for run in row.completed]
        curve = drawn[row.label]
        assert curve.epochs == [1, 2] and curve.runs == [2, 2]
        for index, epoch in enumerate(curve.epochs):
            values = [h[epoch - 1]["val_acc1"] for h in histories]
            assert curve.mean[index] == pytest.approx(sum(values) / 2)
            assert (curve.low[index], curve.high[index]) == (min(values), max(values))


def test_a_run_still_going_shows_its_epochs_so_far_and_a_killed_one_says_so(runs_folder, tmp_path):
    folder = tmp_path / "live"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "train.py", *FAST, "data.train_size=400", "trainer.epochs=200",
                                f"hydra.run.dir={folder}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and process.poll() is None:
            if any(folder.glob("events.out.tfevents.*")) and _history_from_events(folder):
                break
            time.sleep(0.5)
        assert process.poll() is None, "the run ended before it was seen running"
        out = tmp_path / "live.html"
        result = run_script("scripts/report.py", [str(folder), "--out", str(out)])
        assert result.returncode == 0, result.stderr[-2000:]
        page = Page(out.read_text())
        state = next(t for t in page.tables if t["class"] == "runs")["rows"][1][3]
        assert state.startswith("running, ") and "of 200 epochs logged" in state
        assert any("learning" in image.get("alt", "") or "per epoch" in image.get("alt", "")
                   for image in page.images)  # its curve so far
        assert run_folder_in_use(folder)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not run_folder_in_use(folder)
    run = reporting.collect_runs(folder)[0]
    assert run_state(run).startswith("stopped without a final record")


def test_report_refuses_nothing_to_show_and_a_wrong_file_name(tmp_path):
    empty = run_script("scripts/report.py", [str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert empty.returncode == 2 and "no results.json under" in empty.stderr
    assert not (tmp_path / "r.html").exists()
    missing = run_script("scripts/report.py", [str(tmp_path / "nope")])
    assert missing.returncode == 2 and "is not a folder" in missing.stderr


def test_terminal_table_fits_the_width_and_columns_pick(runs_folder):
    runs = [run for run in reporting.collect_runs(runs_folder) if run.dataset == "synthetic"]
    rows = reporting.build_rows(runs)
    wide = reporting.render(rows, "text")
    assert "Paper" not in wide and "Δ" not in wide  # columns without a value are left out
    for width in (60, 80):
        narrow = reporting.render(rows, "text", width=width)
        table = narrow.split("\n\n")
        lines = [line for block in table for line in block.splitlines() if not block.startswith(("Runs of", "Top-1"))]
        assert max(len(line) for line in lines if line) <= width
        # split into parts, each beginning with the model column
        parts = [block for block in table if block.startswith("Model")]
        assert len(parts) >= 2 and all("ResNet-18 + CBAM" in part for part in parts)
    picked = reporting.render(rows, "md", columns=["top1", "vs_plain"])
    assert picked.splitlines()[0] == "| Model | Top-1 err (%) | Top-1 acc vs plain (95% CI) |"
    with pytest.raises(ValueError, match="Unknown column 'top_1'.*top1"):
        reporting.render(rows, "md", columns=["top_1"])
    result = run_script("scripts/paper_table.py", [str(runs_folder / "sweep"), "--columns", "seeds,top1"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "| Model | Seeds | Top-1 err (%) |"  # md when not on a terminal


# ----------------------------------------------------------------- in a browser
def _chromium() -> str:
    """Chromium's path, installed from the system's packages where it is missing; the test skips, saying why,
    where it cannot be."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("no Chromium, and no apt-get run as root to install it (apt-get install chromium)")
    install = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True,
                             timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if install.returncode != 0 or shutil.which("chromium") is None:
        pytest.skip(f"Chromium could not be installed with apt-get: {install.stderr.strip()[-300:]}")
    return shutil.which("chromium")


def _open_in_chromium(browser: str, page: Path, screenshot: Path) -> list[str]:
    """Serve ``page`` on localhost, take a screenshot in headless Chromium, and return the URLs the page itself
    requested besides its own (from Chromium's network log): the browser's own background traffic is told apart
    by its network isolation key."""
    import http.server
    import threading

    handler = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *args: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(page.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    net_log = screenshot.with_suffix(".netlog.json")
    try:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                        "--window-size=1280,2200", f"--log-net-log={net_log}", f"--screenshot={screenshot}",
                        f"{origin}/{page.name}"], capture_output=True, timeout=120, cwd=page.parent)
    finally:
        server.shutdown()
    log = json.loads(net_log.read_text())
    types = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    requested = []
    for event in log["events"]:
        params = event.get("params") or {}
        if types.get(event["type"]) == "URL_REQUEST_START_JOB" and "http://127.0.0.1" in str(
                params.get("network_isolation_key")):
            requested.append(params["url"])
    assert f"{origin}/{page.name}" in requested, "the page itself was not loaded"
    return [url for url in requested if url not in (f"{origin}/{page.name}", f"{origin}/favicon.ico")]


@pytest.mark.slow
def test_the_report_renders_in_a_browser_without_any_request(runs_folder, tmp_path):
    from PIL import Image

    browser = _chromium()
    out = tmp_path / "report.html"
    assert run_script("scripts/report.py", [str(runs_folder), "--out", str(out)]).returncode == 0
    assert _open_in_chromium(browser, out, tmp_path / "shot.png") == []
    shot = Image.open(tmp_path / "shot.png").convert("L")
    assert shot.size == (1280, 2200)
    # Rendered: dark text and figures down the page, not a blank or error page.
    pixels = shot.load()
    inked_rows = sum(any(pixels[x, y] < 128 for x in range(0, 1280, 4)) for y in range(0, 2200, 4))
    assert inked_rows > 150
    # The check has teeth: a page that loads one image from elsewhere is caught.
    leaky = tmp_path / "leaky.html"
    leaky.write_text(out.read_text().replace("</main>", '<img src="http://example.invalid/pixel.png"></main>'))
    assert _open_in_chromium(browser, leaky, tmp_path / "leaky.png") == ["http://example.invalid/pixel.png"]


def _pivot_runs(root: Path, placements: bool) -> Path:
    """results.json files of a blocks x placements (or x recipes) study, two seeds each."""
    from helpers import write_run_results

    cells = [("none", "default", "paper", 12.0), ("SE", "residual", "paper", 11.0), ("SE", "post_add", "paper", 11.5)] \
        if placements else [("none", "default", "paper", 12.0), ("SE", "default", "paper", 11.0),
                            ("none", "default", "modern", 10.0), ("SE", "default", "modern", 9.5)]
    for att, placement, recipe, err1 in cells:
        for seed in (0, 1):
            config = {"seed": seed, "recipe_name": recipe, "model": {"depth": 18, "att_type": att,
                                                                     "att_placement": placement},
                      "data": {"name": "cifar10"}, "trainer": {"epochs": 2}}
            write_run_results(root / f"{att}_{placement}_{recipe}_{seed}", config, [], err1=err1 + seed / 10,
                              epochs=2, data={"train_size": 1000})
    return root


@pytest.mark.parametrize("placements", [True, False], ids=["placements", "recipes"])
def test_the_report_shows_the_pivot_of_a_study(tmp_path, placements):
    from attn_resnet.reporting.html import report_html

    root = _pivot_runs(tmp_path / "study", placements)
    page = Page(report_html(reporting.collect_runs(root), [root]))
    pivot = [t for t in page.tables if t["class"] == "pivot"]
    assert len(pivot) == 1
    header, *rows = pivot[0]["rows"]
    by_block = {row[0]: dict(zip(header, row)) for row in rows}
    if placements:
        assert header[:3] == ["Block", "residual", "post_add"]
        assert by_block["SE"]["residual"].startswith("11.05 ± 0.07 (2)")
        assert by_block["SE"]["post_add"] == "11.55 ± 0.07 (2)" and by_block["SE"]["best"] == "residual"
        assert any(image["alt"] == "top-1 error per placement" for image in page.images)
    else:
        assert header[:3] == ["Block", "paper", "modern"]
        assert by_block["SE"]["paper"] == "88.95 ± 0.07 (2)" and by_block["SE"]["modern"] == "90.45 ± 0.07 (2)"
        assert by_block["SE"]["modern: vs plain (95% CI)"].startswith("+0.50 [+0.50, +0.50]")


def test_a_run_logging_to_csv_only_shows_its_curve_from_metrics_csv(tmp_path):
    """A run with logger=csv has no TensorBoard events: its epochs so far come from the CSV logger's file."""
    from attn_resnet.engine.loggers.base import RunInfo
    from attn_resnet.engine.loggers.csv_logger import CSVLogger
    from attn_resnet.reporting.report import run_history

    from helpers import write_run_results

    folder = tmp_path / "run"
    write_run_results(folder, {"seed": 0, "model": {"depth": 18, "att_type": "SE"}, "data": {"name": "digits"},
                               "trainer": {"epochs": 10}}, [], status="running")
    logger = CSVLogger()
    logger.start(RunInfo(folder, "digits_resnet18_SE"), None)
    for epoch, (loss, acc1) in enumerate([(2.0, 30.0), (1.0, 60.0), (0.5, 80.0)], start=1):
        logger.log_metrics({"train/loss": loss, "val/acc1": acc1, "opt/lr": 0.1}, step=epoch)
    run = reporting.collect_runs(folder)[0]
    assert run_history(run) == [{"epoch": 1, "train_loss": 2.0, "val_acc1": 30.0},
                                {"epoch": 2, "train_loss": 1.0, "val_acc1": 60.0},
                                {"epoch": 3, "train_loss": 0.5, "val_acc1": 80.0}]
    assert run_state(run) == "stopped without a final record (killed, or its machine went down), 3 of 10 epochs logged"


def test_a_stopped_run_and_its_attempts_are_named(tmp_path):
    from helpers import write_run_results

    config = {"seed": 0, "model": {"depth": 18, "att_type": "CBAM"}, "data": {"name": "digits"},
              "trainer": {"epochs": 10}}
    write_run_results(tmp_path / "run", config, [], status="stopped", error="RunStopped: SIGUSR2", requeue=True,
                      attempts=[{"reason": "first start"}, {"reason": "Slurm requeue 1"}])
    run = reporting.collect_runs(tmp_path)[0]
    assert run_state(run) == "stopped on a signal, to resume (requeued) (2 attempts)"
    assert "stopped on a signal, with a checkpoint to resume from" in reporting.problems(reporting.build_rows([run]))[0]
