"""One job of a sweep (``Run``): its identity (data set, depth, attention block and placement), and
selecting runs by ``key=value`` conditions on their config or command line."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..architectures import SHAPE_DEFAULTS, network_label, shape_of
from ..attention_registry import (DEFAULT_PLACEMENT, PLACEMENTS, attention_names, canonical_attention, declared_block,
                                  find_block)
from ..config.choices import EXECUTION_MODEL_KEYS, NETWORK_MODEL_KEYS, TRANSFER_MODEL_KEYS
from ..config.resume import OFF_VALUES



@dataclass
class Run:
    """One job of a sweep, whatever became of it."""

    path: str
    status: str  # completed | failed | running | missing
    dataset: str | None
    depth: int | None
    att_type: str | None
    seed: int | None = None
    err1: float | None = None
    err5: float | None = None
    params: int | None = None
    gflops: float | None = None
    error: str | None = None
    # The training budget: epochs completed, training-set size, and the batches per epoch when
    # trainer.limit_train_batches cut the epochs short (None: the whole set).
    epochs: int | None = None
    train_size: int | None = None
    limit_train_batches: int | None = None
    # A widened or grouped network ("ResNeXt-50 (32x4d)", ``network_identity``); None for the plain ResNet.
    network: str | None = None
    # What the run was launched with, for ``where`` conditions: the resolved config and the
    # command-line overrides (the only record of config-group choices such as ``experiment``).
    config: dict | None = field(default=None, repr=False, compare=False)
    overrides: list[str] = field(default_factory=list, repr=False, compare=False)
    # The whole results.json (history, throughput, device, versions), for reports beyond the table.
    record: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> tuple:
        return (self.dataset, self.depth, self.network, self.att_type)


def _canonical_att(value: Any) -> str | None:
    if value is None:
        return None
    return canonical_attention(str(value)) or str(value)


def _attention_identity(att_type: Any, placement: Any = None, model: dict | None = None) -> str | None:
    """The block's name, with its options where the run set any (``SA(groups=8)``) and ``@placement``
    when the run put it somewhere other than the block's own place, so that such runs are never
    averaged together as if they were seeds of one configuration."""
    name = _canonical_att(att_type)
    if name in (None, "none"):
        return name
    # A fine-tuned run (model.init_from, model.freeze) is never averaged with runs trained from scratch;
    # how the network ran (model.fused) does not tell runs apart, nor does an option set to its default.
    options = {key: value for key, value in (model or {}).items()
               if key not in NETWORK_MODEL_KEYS + EXECUTION_MODEL_KEYS
               and not (key in TRANSFER_MODEL_KEYS and value == OFF_VALUES.get(f"model.{key}"))}
    options = _without_defaults(name, options)
    if options:
        name += "(" + ", ".join(f"{key}={options[key]}" for key in sorted(options)) + ")"
    if placement in (None, DEFAULT_PLACEMENT):
        return name
    return name if block_placement(name) == placement else f"{name}@{placement}"


def _plain_value(value: Any) -> Any:
    """A config value as a literal of the block's source would give it (lists as tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_plain_value(item) for item in value)
    return value


def _without_defaults(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` less those set to the block's own default (read from its source, torch-free): a run with
    ``model.kernel_size=7`` is CBAM as published, and is counted with the runs that did not set it."""
    declared = declared_block(name)
    if declared is None:
        return options
    kept = {}
    for key, value in options.items():
        try:
            default = ast.literal_eval(declared.options[key]) if key in declared.options else object()
        except (ValueError, SyntaxError):  # a default that is not a literal: compare nothing
            default = object()
        if _plain_value(value) != _plain_value(default):
            kept[key] = value
    return kept


def network_identity(model: Mapping[str, Any] | None) -> str | None:
    """The label of a widened or grouped network (``"WideResNet-18 (widen 1.5)"``) from a ``model`` config
    node, a model spec or a published row; None for the plain ResNet of the depth, as runs have always been."""
    shape = shape_of(model or {})
    if all(shape[key] == SHAPE_DEFAULTS[key] for key in shape):
        return None
    return network_label((model or {}).get("depth"), **shape)


def block_placement(name: str) -> str | None:
    """The own placement of the block ``name`` (options allowed: ``SA(groups=8)``; a name, an entry point's name
    or an import path); None for a name no block has here."""
    block = name.split("(")[0]
    if find_block(block) is None:
        return None
    declared = declared_block(block)  # read from its source: torch-free
    if declared is not None and declared.placement is not None:
        return declared.placement
    from ..models.attention import block_class  # imports torch: a block whose source does not say it plainly

    try:
        return getattr(block_class(block), "placement", None)
    except (ValueError, ImportError):
        return None


def _attention_order(att_type: str | None) -> tuple:
    """Sort key of a row's attention: the blocks' and then the placements' registry order, read at call
    time so that a block or placement registered later sorts in its place too."""
    blocks, placements = attention_names(), tuple(PLACEMENTS)
    name, _, placement = str(att_type).partition("@")
    block = name.split("(")[0]
    return (blocks.index(block) if block in blocks else len(blocks), name,
            placements.index(placement) if placement in placements else -1)


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------- selecting runs
def parse_where(conditions: Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
    """``["experiment=cifar10_fast", "model.att_type=CBAM"]`` (or a mapping already) -> {key: value}."""
    if conditions is None:
        return {}
    if isinstance(conditions, Mapping):
        return {str(key): str(value) for key, value in conditions.items()}
    parsed = {}
    for condition in conditions:
        key, equals, value = str(condition).partition("=")
        if not equals or not key.strip():
            raise ValueError(f"Invalid condition {condition!r}: write key=value "
                             "(e.g. experiment=cifar10_fast or model.att_type=CBAM).")
        parsed[key.strip()] = value.strip()
    return parsed


def run_setting(run: Run, key: str) -> Any:
    """What ``key`` was in ``run``: the scalar its resolved config holds there, else the value its
    command-line overrides gave it. A config group's choice (``experiment``, ``trainer``) leaves no
    scalar in the resolved config, so the overrides are its only record; None when neither has it."""
    node: Any = run.config or {}
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is not None and not isinstance(node, (dict, list)):
        return node
    for override in reversed(run.overrides):  # the last one wins, as on Hydra's command line
        name, equals, value = override.lstrip("+").partition("=")
        if equals and name == key:  # a deletion (~key=...) keeps its tilde and never matches
            return value.strip("'\"")
    return None


def _same_value(key: str, actual: Any, wanted: str) -> bool:
    """Equal as the config means them: attention names in any spelling, numbers by value (5e-4 is 0.0005)."""
    if key.split(".")[-1] == "att_type":
        return _canonical_att(actual) == _canonical_att(wanted)
    if isinstance(actual, bool) or str(actual).lower() in ("true", "false"):
        return str(actual).lower() == wanted.lower()
    try:
        return float(actual) == float(wanted)
    except (TypeError, ValueError):
        return str(actual) == wanted


def run_matches(run: Run, where: Mapping[str, str]) -> bool:
    """Whether ``run`` satisfies every ``key=value`` condition; a key the run does not have never matches."""
    for key, wanted in where.items():
        actual = run_setting(run, key)
        if actual is None or not _same_value(key, actual, wanted):
            return False
    return True


def unknown_keys(runs: list[Run], where: Mapping[str, str]) -> list[str]:
    """The condition keys that no run has at all: most likely misspelt (``model.att_tpye``), since a
    condition on them silently selects nothing."""
    return [key for key in where if all(run_setting(run, key) is None for run in runs)]


def distinct_seeds(runs: Iterable[Run]) -> list[int]:
    """The distinct seeds of the completed ones among ``runs``, sorted (a seed run twice counts once)."""
    return sorted({run.seed for run in runs if run.status == "completed" and run.seed is not None})


NO_RECIPE = "(no recipe)"


def run_recipe(run: Run) -> str:
    """The recipe a run trained with: ``recipe_name`` in its resolved config (each ``conf/recipe/`` file
    sets it), else the ``recipe=`` choice of its command line (a job rejected before its config was
    recorded, or one rebuilt from its sweep's record); ``NO_RECIPE`` when neither names one."""
    for key in ("recipe_name", "recipe"):
        value = run_setting(run, key)
        if value is not None:
            return str(value)
    return NO_RECIPE
