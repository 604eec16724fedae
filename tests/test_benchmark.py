"""scripts/benchmark.py --quick: the report's structure and that every ratio is the ratio of its recorded times.

Nothing here asserts a speed: the quick sizes measure nothing, and the machine may be busy.
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics

import pytest

from helpers import run_script

MODEL_KEYS = {"depth", "att_type", "impl", "name", "mode", "params", "step_seconds", "median_step_seconds",
              "images_per_second", "warmup_seconds", "peak_memory_mb", "memory_method"}


@pytest.fixture(scope="module")
def report(module_tmp):
    out = module_tmp("benchmark")
    result = run_script("scripts/benchmark.py", ["--quick", "--device", "cpu", "--threads", "1", "--output-md", str(out / "bench.md"),
                                                 "--output-json", str(out / "bench.json"),
                                                 "--profile-trainer", str(out / "profile")], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text(), out / "profile"


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9)


def test_header_names_machine_versions_and_settings(report):
    data, text, _ = report
    assert data["schema"] == 1
    assert {"platform", "cpu", "cpu_cores", "torch_threads"} <= set(data["machine"])
    assert {"torch", "torchvision", "timm"} <= set(data["versions"])
    settings = data["settings"]
    assert settings["device"] == "cpu" and settings["suite"] == "cpu" and settings["quick"]
    for key in ("dtype", "batch_size", "image_size", "memory_format", "repeats", "depths", "compile"):
        assert key in settings
    for needle in (f"torch {data['versions']['torch']}", f"batch {settings['batch_size']}",
                   f"{settings['image_size']}x{settings['image_size']}", settings["memory_format"],
                   f"repeats {settings['repeats']}", data["machine"]["cpu"]):
        assert needle in text, needle


def test_every_model_was_timed_and_peers_are_there_or_explained(report):
    data, text, _ = report
    settings = data["settings"]
    ours = {(r["depth"], r["att_type"]) for r in data["models"] if r["impl"] == "ours"}
    assert ours == {(d, a) for d in settings["depths"] for a in ("none", "SE", "CBAM", "BAM")}
    for record in data["models"]:
        assert set(record) >= MODEL_KEYS
        assert len(record["step_seconds"]) == settings["repeats"]
        assert close(record["median_step_seconds"], statistics.median(record["step_seconds"]))
        assert close(record["images_per_second"], settings["batch_size"] / record["median_step_seconds"])
    peers = {(r["depth"], r["att_type"]) for r in data["models"] if r["impl"] == "peer"}
    missing = {(m["depth"], m["att_type"]): m["reason"] for m in data["missing_peers"]}
    assert peers | set(missing) == ours and not peers & set(missing)
    assert all(att == "BAM" or "timm" in reason for (_, att), reason in missing.items())
    if importlib.util.find_spec("timm") is None:
        assert any("timm" in note for note in data["notes"])
    else:
        assert all(att == "BAM" for _, att in missing)
    assert "## How the peers differ" in text


def paired(numerator: list[float], denominator: list[float]) -> tuple[float, list[float]]:
    """Median and inclusive quartiles of the per-repeat ratios, by linear interpolation, written out."""
    ordered = sorted(n / d for n, d in zip(numerator, denominator))

    def at(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return at(0.5), [at(0.25), at(0.75)]


def same(row: dict, expected: tuple[float, list[float]]) -> bool:
    ratio, spread = expected
    return close(row["ratio"], ratio) and all(close(a, b) for a, b in zip(row["spread"], spread))


def test_ratios_are_the_medians_of_the_per_repeat_ratios_of_the_recorded_times(report):
    data, text, _ = report
    by_key = {(r["depth"], r["att_type"], r["impl"], r["mode"]): r for r in data["models"]}
    versus = data["ratios"]["ours_vs_peer"]
    assert versus
    for row in versus:
        ours = by_key[(row["depth"], row["att_type"], "ours", row["mode"])]
        peer = by_key[(row["depth"], row["att_type"], "peer", row["mode"])]
        assert close(row["ours_seconds"], ours["median_step_seconds"])
        assert close(row["peer_seconds"], peer["median_step_seconds"])
        assert same(row, paired(ours["step_seconds"], peer["step_seconds"]))
        assert row["spread"][0] <= row["ratio"] <= row["spread"][1]
    overhead = data["ratios"]["attention_overhead"]
    assert {(r["depth"], r["att_type"]) for r in overhead} == {
        (d, a) for d in data["settings"]["depths"] for a in ("SE", "CBAM", "BAM")}
    for row in overhead:
        plain = by_key[(row["depth"], "none", "ours", row["mode"])]["step_seconds"]
        with_block = by_key[(row["depth"], row["att_type"], "ours", row["mode"])]["step_seconds"]
        assert same(row, paired(with_block, plain))
        assert f"{row['ratio']:.3f} ({row['spread'][0]:.3f}–{row['spread'][1]:.3f})" in text
    assert "first to third quartile" in text


def test_data_path_and_trainer_sections(report):
    data, text, _ = report
    loader = data["data"]
    import attn_resnet.data

    if getattr(attn_resnet.data, "DeviceImageLoader", None) is None:
        assert "skipped" in loader and "Skipped" in text
    else:
        for side in ("device_loader", "per_image"):
            seconds = loader[side]["seconds_per_image"]
            assert len(seconds) == loader["repeats"]
            assert close(loader[side]["images_per_second"], 1 / statistics.median(seconds))
        # an images/s ratio, repeat by repeat: the per-image pipeline's seconds over the device loader's
        assert same(loader, paired(loader["per_image"]["seconds_per_image"], loader["device_loader"]["seconds_per_image"]))
        assert data["ratios"]["data_loader"] == loader["ratio"]
    trainer = data["trainer"]
    for side in ("trainer", "bare_loop"):
        assert close(trainer[side]["images_per_second"], 1 / statistics.median(trainer[side]["seconds_per_image"]))
    assert same(trainer, paired(trainer["bare_loop"]["seconds_per_image"], trainer["trainer"]["seconds_per_image"]))
    headline = {row["check"]: row for row in data["headline"]}
    assert headline["Trainer epoch / bare loop"]["spread"] == trainer["spread"]
    assert data["ratios"]["trainer_vs_bare"] == trainer["ratio"]


def test_headline_checks_each_target_against_its_measurement(report):
    data, text, _ = report
    checks = {row["check"]: row for row in data["headline"]}
    assert any("Trainer" in check for check in checks)
    for row in data["headline"]:
        if row["value"] is None:
            assert row["met"] is None
        else:
            expected = row["value"] <= row["target"] if row["comparison"] == "<=" else row["value"] >= row["target"]
            assert row["met"] == expected
    # Quick mode times ResNet-18 only: the ResNet-50 targets are reported as not measured.
    assert all(row["met"] is None for row in data["headline"] if "50" in row["check"])
    assert "## Targets" in text and "not measured" in text


def test_render_rewrites_the_markdown_of_a_report_with_added_notes(report, tmp_path):
    data, _, _ = report
    source = tmp_path / "report.json"
    source.write_text(json.dumps(data))
    result = run_script("scripts/benchmark.py", ["--render", str(source), "--note", "measured on a quiet machine",
                                                 "--output-md", str(tmp_path / "out.md"),
                                                 "--output-json", str(tmp_path / "out.json")], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rendered = json.loads((tmp_path / "out.json").read_text())
    assert rendered["notes"] == data["notes"] + ["measured on a quiet machine"]
    assert rendered["models"] == data["models"]
    assert "- note: measured on a quiet machine" in (tmp_path / "out.md").read_text()


def test_render_derives_every_ratio_and_spread_from_the_recorded_times(report, tmp_path):
    # A report written by an earlier version (a ratio of medians, no spreads) is rendered with the
    # statistics of this one, computed from its per-repeat times; nothing is measured again.
    data, text, _ = report
    old = json.loads(json.dumps(data))
    for row in old["ratios"]["ours_vs_peer"] + old["ratios"]["attention_overhead"] + old["headline"]:
        row.pop("spread", None)
        row["ratio" if "ratio" in row else "value"] = 1.5
    for section in (old["trainer"], old["data"]):
        section.pop("spread", None)
        section["ratio"] = 1.5
    source = tmp_path / "old.json"
    source.write_text(json.dumps(old))
    result = run_script("scripts/benchmark.py", ["--render", str(source), "--output-md", str(tmp_path / "out.md"),
                                                 "--output-json", str(tmp_path / "out.json")], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rendered = json.loads((tmp_path / "out.json").read_text())
    assert rendered["ratios"] == data["ratios"] and rendered["headline"] == data["headline"]
    assert (tmp_path / "out.md").read_text().split("## Targets")[1] == text.split("## Targets")[1]


def test_profile_cbam_times_each_gate_and_both_maxima(tmp_path):
    result = run_script("scripts/profile_cbam.py", ["--quick", "--device", "cpu", "--threads", "1",
                                                    "--precision", "bf16", "--channels-last",
                                                    "--output-md", str(tmp_path / "cbam.md"),
                                                    "--output-json", str(tmp_path / "cbam.json")], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "cbam.json").read_text())
    text = (tmp_path / "cbam.md").read_text()
    steps = {row["variant"]: row for row in data["steps"]}
    assert list(steps) == ["plain", "CBAM", "channel gate only", "spatial gate only", "CBAM, maxima as means (a bound)"]
    plain = steps["plain"]["step_seconds"]
    for row in steps.values():
        assert len(row["step_seconds"]) == data["settings"]["repeats"]
        assert same(row, paired(row["step_seconds"], plain))
        assert f"| {row['variant']} | {row['ratio']:.3f} (" in text
    assert steps["plain"]["ratio"] == 1.0
    ops = {(row["stage"], row["op"]) for row in data["max_ops"]}
    assert len(ops) == 16 and {stage for stage, _ in ops} == {"layer1", "layer2", "layer3", "layer4"}
    assert all(row["forward_us"] > 0 and row["forward_backward_us"] > 0 for row in data["max_ops"])
    # ResNet-18 at 32x32: the stage outputs are 8x8 .. 1x1 with 64 .. 512 channels
    assert [row["shape"] for row in data["max_ops"]][::4] == [[2, 64, 8, 8], [2, 128, 4, 4], [2, 256, 2, 2],
                                                               [2, 512, 1, 1]]
    assert "python scripts/profile_cbam.py --quick" in text and data["machine"]["cpu"] in text
    assert "bf16 autocast, channels_last" in text


def test_profile_cbam_variants_drop_exactly_one_gate():
    import sys

    from helpers import REPO

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import profile_cbam
    finally:
        sys.path.remove(str(REPO / "scripts"))
    from attn_resnet.models.attention.cbam import ChannelGate, SpatialGate

    def gates(variant: str) -> tuple[int, int]:
        modules = list(profile_cbam.build_variant(18, variant).modules())
        return (sum(isinstance(m, ChannelGate) for m in modules), sum(isinstance(m, SpatialGate) for m in modules))

    assert gates("plain") == (0, 0) and gates("CBAM") == (8, 8)
    assert gates("channel gate only") == (8, 0) and gates("spatial gate only") == (0, 8)
    assert gates(profile_cbam.BOUND) == (8, 8)


def test_profile_cbam_bound_gates_swap_each_max_for_the_mean_and_keep_the_rest():
    import sys

    import torch

    from helpers import REPO

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import profile_cbam
    finally:
        sys.path.remove(str(REPO / "scripts"))
    from attn_resnet.models.attention.cbam import CBAM

    torch.manual_seed(0)
    block = CBAM(32, reduction=4).train()
    x = torch.randn(3, 32, 5, 5)
    channel, spatial = block.channel_gate, block.spatial_gate
    average = x.mean((2, 3))
    scale = torch.sigmoid(2 * channel.mlp(average))
    expected_channel = x * scale[:, :, None, None]
    mean = expected_channel.mean(1, keepdim=True)
    expected = expected_channel * torch.sigmoid(spatial.bn(spatial.conv(torch.cat([mean, mean], 1))))
    real = block(x)
    channel.__class__, spatial.__class__ = profile_cbam.ChannelGateWithoutMax, profile_cbam.SpatialGateWithoutMax
    bound = block(x)
    torch.testing.assert_close(bound, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(bound, real, atol=1e-3)  # the real block's maxima differ from the means


def test_trainer_profile_tables_tell_the_two_loops_apart(report):
    data, text, folder = report
    assert data["trainer"]["profiles"] == ["trainer_profile_trainer.txt", "trainer_profile_bare_loop.txt"]
    trainer = (folder / "trainer_profile_trainer.txt").read_text()
    bare = (folder / "trainer_profile_bare_loop.txt").read_text()
    for table in (trainer, bare):
        assert "ops by self host time" in table and "aten::convolution_backward" in table
    # the training meters' non-finite watch runs in the Trainer's step only
    assert "aten::isfinite" in trainer and "aten::isfinite" not in bare
    assert "trainer_profile_trainer.txt" in text
