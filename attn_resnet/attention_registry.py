"""The attention-block registry: a block's name and where its class lives.

Torch-free, so that the config layer can check ``model.att_type`` before torch is imported.
Adding a block is one file under ``attn_resnet/models/attention/`` plus one line here; the
block declares its own options (its constructor's keyword arguments), placements and init,
and ``attn_resnet.models.attention`` resolves these names to classes.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

NO_ATTENTION = "none"

# name -> "module:Class" under attn_resnet.models.attention
BLOCKS: dict[str, str] = {
    "SE": "se:SE",
    "CBAM": "cbam:CBAM",
    "BAM": "bam:BAM",
    "ECA": "eca:ECA",
    "SEVar": "se_variants:SEVar",
    "GC": "gc:GC",
    "CoordAtt": "coord:CoordAtt",
    "SK": "sk:SK",
    "SA": "shuffle:SA",
    "PSA": "psa:PSA",
    "Triplet": "triplet:Triplet",
}


@dataclass(frozen=True)
class Placement:
    """Where in the network a block goes (``model.att_placement``): the ResNet slot it fills and how often.

    ``slot`` is the network's attribute that holds the block; ``scope`` says how many there are:
    "block" (one per residual block, ``layer<s>.<i>.<slot>``), "stage" (one after each of stages
    1-3, ``<slot>.<s-1>``) or "network" (one, ``<slot>``). The visualiser reads module names with
    these, reports order their columns by this table, and the zoo sweeps over it.
    """

    slot: str
    scope: str
    description: str


# The one list of placements, in the order reports show them; "default" takes the block's own.
PLACEMENTS: dict[str, Placement] = {
    "residual": Placement("attn", "block", "in every residual block, on the branch before the addition "
                                            "(SE's and CBAM's place)"),
    "post_add": Placement("post_attn", "block", "in every residual block, after the addition and its ReLU"),
    "stage": Placement("stage_attn", "stage", "on the outputs of stages 1-3 (BAM's place)"),
    "head": Placement("head_attn", "network", "once, after the last stage, before the global pooling"),
}
DEFAULT_PLACEMENT = "default"


def placement_names() -> tuple[str, ...]:
    """Every registered placement, in the registry's (and the reports') order."""
    return tuple(PLACEMENTS)


def placement_choices() -> tuple[str, ...]:
    """Every valid ``att_placement``: "default" (the block's own) and the registered ones."""
    return (DEFAULT_PLACEMENT, *PLACEMENTS)


def attention_names() -> tuple[str, ...]:
    """Every valid ``att_type`` in its canonical spelling, "none" first."""
    return (NO_ATTENTION, *BLOCKS)


def canonical_attention(value) -> str | None:
    """The canonical spelling of an ``att_type`` (case-insensitive; None means "none"), or None if unknown."""
    if value is None:
        return NO_ATTENTION
    if isinstance(value, str):
        for name in attention_names():
            if name.lower() == value.lower():
                return name
    return None


@dataclass(frozen=True)
class DeclaredBlock:
    """What a block's source says about it, read without importing torch (for ``--help`` and the
    command-line check): the first line of its docstring, its own placement, and its options with
    their defaults as written (``{"reduction": "16"}``)."""

    name: str
    summary: str
    placement: str | None
    options: dict[str, str]


@lru_cache(maxsize=None)
def declared_block(name: str) -> DeclaredBlock | None:
    """The block ``name`` as its source file declares it; None when its class cannot be read that way
    (no ``__init__`` of its own, ``**kwargs``): callers then know nothing of its options.

    The options are the constructor's arguments after ``channels``, as ``block_options`` reads them
    from the imported class; a test checks that the two agree for every registered block.
    """
    module, class_name = BLOCKS[name].split(":")
    path = Path(__file__).resolve().parent / "models" / "attention" / f"{module}.py"
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None
    block = next((node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name), None)
    init = next((node for node in (block.body if block else ()) if isinstance(node, ast.FunctionDef)
                 and node.name == "__init__"), None)
    if init is None or init.args.kwarg is not None or init.args.vararg is not None:
        return None
    positional = init.args.args[2:]  # after self and channels
    defaults = [None] * (len(positional) - len(init.args.defaults)) + list(init.args.defaults)
    options = {arg.arg: "required" if default is None else ast.unparse(default)
               for arg, default in zip(positional, defaults)}
    options |= {arg.arg: "required" if default is None else ast.unparse(default)
                for arg, default in zip(init.args.kwonlyargs, init.args.kw_defaults)}
    placement = next((node.value.value for node in block.body if isinstance(node, ast.Assign)
                      and any(isinstance(t, ast.Name) and t.id == "placement" for t in node.targets)
                      and isinstance(node.value, ast.Constant)), None)
    summary = (ast.get_docstring(block) or "").strip().split("\n")[0]
    return DeclaredBlock(name, summary, placement, options)
