"""The published tables shipped with the package (``paper_results.json``)."""

from __future__ import annotations

import json
from importlib import resources


def load_papers() -> dict[str, dict]:
    """The published tables shipped with the package (``paper_results.json``)."""
    text = resources.files("attn_resnet").joinpath("paper_results.json").read_text()
    return {key: value for key, value in json.loads(text).items() if not key.startswith("_")}


def paper_table(name: str) -> dict:
    papers = load_papers()
    if name not in papers:
        raise ValueError(f"Unknown paper table {name!r}. Valid choices: {', '.join(papers)}.")
    return papers[name]
