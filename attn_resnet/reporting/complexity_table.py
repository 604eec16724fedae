"""Params and GFLOPs of a paper's models, built on the meta device, beside the published ones (no runs)."""

from __future__ import annotations

from dataclasses import dataclass

from ..dataset_registry import NETWORK_TYPES, stem_of
from .aggregate import Row

COMPLEXITY_HEADER = ["Model", "Params (M)", "Paper params (M)", "GFLOPs", "Paper GFLOPs", "Match"]


@dataclass
class ComplexityRow:
    depth: int
    att_type: str
    params_m: float
    gflops: float
    paper: dict

    @property
    def label(self) -> str:
        return Row(None, self.depth, self.att_type).label

    def printed(self, key: str, value: float) -> str:
        """Our value at the precision the paper printed its own."""
        published = self.paper.get(key)
        decimals = len(published.split(".")[1]) if published and "." in published else 2
        return f"{value:.{decimals}f}"

    @property
    def matches(self) -> bool:
        return all(self.paper.get(key) in (None, self.printed(key, value))
                   for key, value in (("params_m", self.params_m), ("gflops", self.gflops)))


def complexity_rows(paper: dict, image_size: int | None = None) -> list[ComplexityRow]:
    """Params and GFLOPs of each of the paper's models, built on the meta device (no training)."""
    import torch

    from ..complexity import measure
    from ..models import ResidualNet

    network_type = NETWORK_TYPES[paper["dataset"]]  # the paper's data set: its stem and default class count
    size = image_size or (224 if stem_of(network_type) == "imagenet" else 32)
    rows = []
    for published in paper["rows"]:
        with torch.device("meta"):
            model = ResidualNet(network_type, published["depth"], None, published["att_type"],
                                stride_in_1x1=bool(published.get("stride_in_1x1", False)))
        result = measure(model, (3, size, size))
        rows.append(ComplexityRow(published["depth"], published["att_type"], result.params_m, result.gflops,
                                  published))
    return rows


def complexity_cells(row: ComplexityRow) -> list[str]:
    return [row.label + (" (stride in 1x1)" if row.paper.get("stride_in_1x1") else ""),
            row.printed("params_m", row.params_m), row.paper.get("params_m") or "–",
            row.printed("gflops", row.gflops), row.paper.get("gflops") or "–", "yes" if row.matches else "NO"]


def complexity_record(row: ComplexityRow) -> dict:
    return {"model": row.label, "depth": row.depth, "att_type": row.att_type,
            "stride_in_1x1": bool(row.paper.get("stride_in_1x1")),
            "params_m": float(row.printed("params_m", row.params_m)), "gflops": float(row.printed("gflops", row.gflops)),
            "paper_params_m": row.paper.get("params_m"), "paper_gflops": row.paper.get("gflops"),
            "match": row.matches}
