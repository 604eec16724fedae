"""A report's ratios, their spreads and the headline checks, derived from its recorded per-repeat times."""

from __future__ import annotations

from .settings import ATT_TYPES
from .suite_fused import fused_key
from .timing import paired_ratio

# Targets the project set itself; each is checked where its measurement exists.
TARGETS = {
    "cpu": {"overhead": {"CBAM": 1.20, "BAM": 1.12}},
    "gpu": {"overhead": {"CBAM": 1.15, "SE": 1.10}},
    "common": {"ours_vs_peer": 1.00, "loader_speedup": 10.0, "trainer_vs_bare": 0.97, "depth": 50},
}


def model_ratios(records: list[dict], depths: list[int]) -> tuple[list[dict], list[dict]]:
    """``(ours vs peer, attention overhead)`` rows, each with both times, their ratio and its spread."""
    by_key = {(r["depth"], r["att_type"], r["impl"], r["mode"]): r for r in records}
    versus, overhead = [], []
    modes = sorted({r["mode"] for r in records}, key=["eager", "compiled"].index)
    for mode in modes:
        for depth in depths:
            plain = by_key.get((depth, "none", "ours", mode))
            # The default blocks first, then any other the run was given (--att-types mypkg.gates:MyGate).
            for att_type in dict.fromkeys([*ATT_TYPES, *(r["att_type"] for r in records)]):
                ours = by_key.get((depth, att_type, "ours", mode))
                peer = by_key.get((depth, att_type, "peer", mode))
                if ours is not None and peer is not None:
                    versus.append({"depth": depth, "att_type": att_type, "mode": mode, "peer": peer["name"],
                                   "ours_seconds": ours["median_step_seconds"],
                                   "peer_seconds": peer["median_step_seconds"],
                                   **paired_ratio(ours["step_seconds"], peer["step_seconds"])})
                if att_type != "none" and ours is not None and plain is not None:
                    overhead.append({"depth": depth, "att_type": att_type, "mode": mode,
                                     "with_seconds": ours["median_step_seconds"],
                                     "plain_seconds": plain["median_step_seconds"],
                                     **paired_ratio(ours["step_seconds"], plain["step_seconds"])})
    return versus, overhead


def fused_ratios(fused: dict) -> list[dict]:
    """Per block and model.fused: the step time over the plain step's, and (fused rows) the eager step's over it."""
    contenders = fused.get("contenders")
    if not contenders:
        return []
    plain = contenders["none"]["step_seconds"]
    rows = []
    for key, record in contenders.items():
        if record["att_type"] == "none":
            continue
        row = {"att_type": record["att_type"], "fused": record["fused"],
               **paired_ratio(record["step_seconds"], plain)}
        if record["fused"]:
            eager = contenders[fused_key(record["att_type"], False)]["step_seconds"]
            speedup = paired_ratio(eager, record["step_seconds"])
            row["speedup"], row["speedup_spread"] = speedup["ratio"], speedup["spread"]
        rows.append(row)
    return rows


def headline(report: dict) -> list[dict]:
    """Each target: what was measured against it, and whether it was met (None: not measured)."""
    settings = report["settings"]
    suite_targets = TARGETS[settings["suite"]]
    common = TARGETS["common"]
    depth = common["depth"]
    rows = []

    def add(check: str, value: float | None, target: float, at_most: bool, detail: str,
            spread: list[float] | None) -> None:
        met = None if value is None else (value <= target if at_most else value >= target)
        rows.append({"check": check, "value": value, "target": target, "spread": spread,
                     "comparison": "<=" if at_most else ">=", "met": met, "detail": detail})

    eager = "eager"
    overhead = {(r["depth"], r["att_type"], r["mode"]): r for r in report["ratios"]["attention_overhead"]}
    for att_type, target in suite_targets["overhead"].items():
        row = overhead.get((depth, att_type, eager), {})
        add(f"{att_type} overhead over our plain ResNet-{depth} ({eager})", row.get("ratio"),
            target, True, "step time with the block / without", row.get("spread"))
    fused = report.get("fused", {})
    if not fused.get("interpreted", True) and fused.get("depth") == depth:  # interpreted kernels measure nothing
        for row in report["ratios"].get("fused", []):
            if row["fused"] and row["att_type"] in suite_targets["overhead"]:
                add(f"{row['att_type']} overhead over our plain ResNet-{depth}, model.fused=true ({eager})",
                    row["ratio"], suite_targets["overhead"][row["att_type"]], True,
                    "step time with the block / without (fused section)", row.get("spread"))
    versus = {(r["depth"], r["att_type"], r["mode"]): r for r in report["ratios"]["ours_vs_peer"]}
    for att_type, label in (("none", "R"), ("SE", "SE-R"), ("CBAM", "CBAM-R")):
        row = versus.get((depth, att_type, eager))
        add(f"our {label}{depth} / {row['peer'] if row else 'peer'} ({eager})", row["ratio"] if row else None,
            common["ours_vs_peer"], True, "train step time ratio", row.get("spread") if row else None)
    data = report["data"]
    add(f"device loader / per-image pipeline (batch {settings['data']['batch_size']})", data.get("ratio"),
        common["loader_speedup"], False, "images/s ratio", data.get("spread"))
    add("Trainer epoch / bare loop", report["trainer"].get("ratio"), common["trainer_vs_bare"], False,
        "images/s ratio", report["trainer"].get("spread"))
    return rows


def derive(report: dict) -> None:
    """(Re)compute every ratio, its spread and the headline from the per-repeat times in ``report``."""
    versus, overhead = model_ratios(report.get("models", []), report["settings"]["depths"])
    data, trainer = report["data"], report["trainer"]
    if "device_loader" in data:  # images/s ratio = per-image seconds / device-loader seconds
        data.update(paired_ratio(data["per_image"]["seconds_per_image"], data["device_loader"]["seconds_per_image"]))
    if "bare_loop" in trainer:
        trainer.update(paired_ratio(trainer["bare_loop"]["seconds_per_image"], trainer["trainer"]["seconds_per_image"]))
    report["ratios"] = {"ours_vs_peer": versus, "attention_overhead": overhead,
                        "data_loader": data.get("ratio"), "trainer_vs_bare": trainer.get("ratio"),
                        "fused": fused_ratios(report.get("fused", {}))}
    report["headline"] = headline(report)
