"""The attention-block registry: a block's name and where its class lives.

Torch-free, so that the config layer can check ``model.att_type`` before torch is imported.
A built-in block is one file under ``attn_resnet/models/attention/`` plus one line in ``BLOCKS``.
A block from outside the package comes in through the same registry (``attn_resnet.registry``):
by an import path (``model.att_type=mypkg.gates:MyGate``), an entry point of an installed package
(group ``attn_resnet.blocks``; then ``model.att_type=MyGate``), or ``register_block(name, cls)``
at run time. Every block declares its own options (its constructor's keyword arguments),
placements and init, and ``attn_resnet.models.attention`` resolves these names to classes.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from typing import Any

from .registry import Found, Registry, RegistryError, parse_path
from .signatures import class_options, definition

NO_ATTENTION = "none"
BLOCK_GROUP = "attn_resnet.blocks"
_BUILT_IN = "attn_resnet.models.attention"

# name -> "module:Class"; the built-in ones live under attn_resnet.models.attention
BLOCKS = Registry("attention block", BLOCK_GROUP, {
    "SE": f"{_BUILT_IN}.se:SE",
    "CBAM": f"{_BUILT_IN}.cbam:CBAM",
    "BAM": f"{_BUILT_IN}.bam:BAM",
    "ECA": f"{_BUILT_IN}.eca:ECA",
    "SEVar": f"{_BUILT_IN}.se_variants:SEVar",
    "GC": f"{_BUILT_IN}.gc:GC",
    "CoordAtt": f"{_BUILT_IN}.coord:CoordAtt",
    "SK": f"{_BUILT_IN}.sk:SK",
    "SA": f"{_BUILT_IN}.shuffle:SA",
    "PSA": f"{_BUILT_IN}.psa:PSA",
    "Triplet": f"{_BUILT_IN}.triplet:Triplet",
}, ignore_case=True)


def register_block(name: str, cls: Any, *, replace: bool = False) -> None:
    """Register an attention block class (or its "module:Class" path) under ``name``, for this process.

    ``model.att_type=<name>`` and ``ResidualNet(..., att_type=<name>)`` then build it. Sweep workers in
    other processes (joblib, Slurm) do not see a registration made at run time: give them the block by
    its import path or an entry point instead.
    """
    if isinstance(name, str) and name.lower() == NO_ATTENTION:
        raise RegistryError(f"Cannot register a block named {name!r}: it means no attention.")
    BLOCKS.register(name, cls, replace=replace)


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
    """Every block known by name in its canonical spelling, "none" first: the built-in ones, those registered
    at run time and those of installed packages' entry points (a block given by import path is not listed)."""
    return (NO_ATTENTION, *BLOCKS.names())


def find_block(value: Any) -> Found | None:
    """Where the block ``value`` (a name, an import path or a class) lives; None for "none" and for unknown names."""
    if value is None or (isinstance(value, str) and value.lower() == NO_ATTENTION):
        return None
    if isinstance(value, type):
        return BLOCKS.find(_name_of_class(value))
    return BLOCKS.find(value)


def canonical_attention(value: Any) -> str | None:
    """The canonical spelling of an ``att_type`` (names case-insensitive; None means "none"), or None if unknown.

    A block class is named by its registered name, else by its import path ("mypkg.gates:MyGate"); a class
    that cannot be imported by its path (defined inside a function) is registered under its class name.
    """
    if value is None or (isinstance(value, str) and value.lower() == NO_ATTENTION):
        return NO_ATTENTION
    if isinstance(value, type):
        return _name_of_class(value)
    if isinstance(value, str):
        return BLOCKS.canonical(value)
    return None


def display_name(value: Any) -> str:
    """A block's name as run folders spell it: its canonical name, with a path's colon as a dot
    ("mypkg.gates.MyGate" for "mypkg.gates:MyGate"); an unknown value as it is."""
    name = canonical_attention(value)
    if name is None:
        return str(value)
    path = parse_path(name)
    return f"{path[0]}.{path[1]}" if path else name


def _name_of_class(cls: type) -> str:
    found = BLOCKS.find(cls)
    if found is not None:
        return found.name
    for name in BLOCKS:  # a built-in (or registered) target that imports to this class
        entry = BLOCKS[name]
        if isinstance(entry, str) and entry == f"{cls.__module__}:{cls.__qualname__}":
            return name
    module, qualname = cls.__module__, cls.__qualname__
    if "<locals>" not in qualname and module != "__main__":
        return f"{module}:{qualname}"
    register_block(cls.__name__, cls)  # not importable by a path: known by name in this process
    return cls.__name__


@dataclass(frozen=True)
class DeclaredBlock:
    """What a block's source says about it, read without importing torch (for ``--help`` and the
    command-line check): the first line of its docstring, its own placement, and its options with
    their defaults as written (``{"reduction": "16"}``)."""

    name: str
    summary: str
    placement: str | None
    options: dict[str, str]


def declared_block(value: Any) -> DeclaredBlock | None:
    """The block ``value`` (a name or an import path) as its source file declares it; None when its class
    cannot be read that way (no ``__init__`` of its own, ``**kwargs``, a module that cannot be found):
    callers then know nothing of its options.

    The options are the constructor's arguments after ``channels``, as ``block_options`` reads them
    from the imported class; a test checks that the two agree for every registered block.
    """
    found = find_block(value)
    if found is None:
        return None
    if found.obj is not None:
        return _declared_from_class(found.name, found.obj)
    return _declared_from_source(found.name, found.target)


def _declared_from_source(name: str, target: str) -> DeclaredBlock | None:
    block = definition(target)
    options = class_options(block, 1) if isinstance(block, ast.ClassDef) else None  # after channels
    if options is None:
        return None
    placement = next((node.value.value for node in block.body if isinstance(node, ast.Assign)
                      and any(isinstance(t, ast.Name) and t.id == "placement" for t in node.targets)
                      and isinstance(node.value, ast.Constant)), None)
    summary = (ast.get_docstring(block) or "").strip().split("\n")[0]
    return DeclaredBlock(name, summary, placement, options)


def _declared_from_class(name: str, cls: Any) -> DeclaredBlock | None:
    try:
        parameters = list(inspect.signature(cls).parameters.values())[1:]  # after channels
    except (TypeError, ValueError):
        return None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
        return None
    options = {p.name: "required" if p.default is p.empty else repr(p.default) for p in parameters
               if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    placement = getattr(cls, "placement", None)
    summary = (inspect.getdoc(cls) or "").strip().split("\n")[0]
    return DeclaredBlock(name, summary, placement if isinstance(placement, str) else None, options)
