"""Params and GFLOPs of a paper's models, built on the meta device, beside the published ones (no runs)."""

from __future__ import annotations

from dataclasses import dataclass

from ..architectures import shape_of
from ..dataset_registry import NETWORK_TYPES, stem_of
from .aggregate import Row
from .runs import _attention_identity, network_identity

COMPLEXITY_HEADER = ["Model", "Params (M)", "Paper params (M)", "GFLOPs", "Paper GFLOPs", "Match"]
NOT_AVAILABLE = "not available"
SIZE_KEYS = ("params_m", "gflops")


@dataclass
class ComplexityRow:
    depth: int
    att_type: str
    params_m: float
    gflops: float
    paper: dict
    network: str | None = None  # a widened or grouped network's label; None for the plain ResNet

    @property
    def label(self) -> str:
        return Row(None, self.depth, self.att_type, network=self.network).label

    @staticmethod
    def _printed(published: str | None, value: float) -> str:
        decimals = len(published.split(".")[1]) if published and "." in published else 2
        return f"{value:.{decimals}f}"

    def printed(self, key: str, value: float) -> str:
        """Our value at the precision the paper printed its own."""
        return self._printed(self.paper.get(key), value)

    def _agrees(self, sizes: dict) -> bool:
        return all(sizes.get(key) in (None, self._printed(sizes.get(key), getattr(self, key))) for key in SIZE_KEYS)

    @property
    def matches(self) -> bool:
        """Params and GFLOPs equal the published ones at the paper's printed precision (or it prints none)."""
        return self._agrees(self.paper)

    @property
    def matches_elsewhere(self) -> bool:
        """They equal the sizes another table of the paper prints for the same network (``elsewhere``)."""
        return bool(self.paper.get("elsewhere")) and self._agrees(self.paper["elsewhere"])

    @property
    def accounted_for(self) -> bool:
        """Reproduced as printed, as printed elsewhere in the paper, or not with a stated reason (``size_note``)."""
        return self.matches or self.matches_elsewhere or bool(self.paper.get("size_note"))

    @property
    def match_text(self) -> str:
        if all(self.paper.get(key) is None for key in SIZE_KEYS):
            return "–"  # the paper prints no size for this row
        if self.matches:
            return "yes"
        if self.matches_elsewhere:
            return f"no; yes as printed in {self.paper['elsewhere']['where']}"
        return "NO (reason below)" if self.paper.get("size_note") else "NO"


def complexity_rows(paper: dict, image_size: int | None = None) -> list[ComplexityRow]:
    """Params and GFLOPs of each of the paper's models, built on the meta device (no training): each row's
    network shape, block, block options and placement as the paper's row gives them."""
    import torch

    from ..complexity import measure
    from ..models import ResidualNet

    network_type = NETWORK_TYPES[paper["dataset"]]  # the paper's data set: its stem and default class count
    size = image_size or (224 if stem_of(network_type) == "imagenet" else 32)
    rows = []
    for published in paper["rows"]:
        with torch.device("meta"):
            model = ResidualNet(network_type, published["depth"], None, published["att_type"],
                                stride_in_1x1=bool(published.get("stride_in_1x1", False)),
                                att_placement=published.get("att_placement", "default"),
                                **shape_of(published), **published.get("options", {}))
        result = measure(model, (3, size, size))
        attention = _attention_identity(published["att_type"], published.get("att_placement"),
                                        published.get("options"))
        rows.append(ComplexityRow(published["depth"], attention, result.params_m, result.gflops, published,
                                  network_identity(published)))
    return rows


def _published(row: ComplexityRow, key: str) -> str:
    if row.paper.get("published") is False:
        return NOT_AVAILABLE
    return row.paper.get(key) or "–"


def complexity_cells(row: ComplexityRow) -> list[str]:
    return [row.label + (" (stride in 1x1)" if row.paper.get("stride_in_1x1") else ""),
            row.printed("params_m", row.params_m), _published(row, "params_m"),
            row.printed("gflops", row.gflops), _published(row, "gflops"), row.match_text]


def complexity_notes(rows: list[ComplexityRow]) -> list[str]:
    """Why each size that is not reproduced is not: the rows' ``size_note``."""
    return [f"{row.label}: {row.paper['size_note']}" for row in rows if not row.matches and row.paper.get("size_note")]


def complexity_record(row: ComplexityRow) -> dict:
    elsewhere = row.paper.get("elsewhere") or {}
    return {"model": row.label, "depth": row.depth, "network": row.network or f"ResNet-{row.depth}",
            "att_type": row.att_type, "stride_in_1x1": bool(row.paper.get("stride_in_1x1")),
            "params_m": float(row.printed("params_m", row.params_m)), "gflops": float(row.printed("gflops", row.gflops)),
            "paper_params_m": row.paper.get("params_m"), "paper_gflops": row.paper.get("gflops"),
            "elsewhere_params_m": elsewhere.get("params_m"), "elsewhere_gflops": elsewhere.get("gflops"),
            "match": row.matches, "match_elsewhere": row.matches_elsewhere, "size_note": row.paper.get("size_note")}
