"""Hydra sweeps: the jobs a sweep launches, and each job's identity rebuilt from its ``multirun.yaml``."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from ..config import resolvers  # noqa: F401 - sweeper params may use ${att_blocks:} and ${seeds}-style interpolations
from .runs import Run, _as_int, _attention_identity, network_identity

if TYPE_CHECKING:  # Hydra is imported only where a sweep is read
    from hydra.core.override_parser.types import Override


def sweep_jobs(config) -> list[list[str]]:
    """The override list of every job a Hydra sweep of ``config`` (with its ``hydra`` node) launches.

    Combines ``hydra.sweeper.params`` with the command-line overrides exactly as Hydra's
    basic sweeper does (the command line wins for a key given in both). A command-line sweep
    has no ``params`` (``hydra.sweeper.params: null``).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else dict(params or {})
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.get("task") or [])
    return sweep_combinations(OverridesParser.create().parse_overrides(arguments))


def sweep_combinations(overrides: list[Override]) -> list[list[str]]:
    """Every job of a sweep over parsed ``overrides``, in the order and spelling Hydra's basic sweeper
    launches them: one list per key (a sweep's values, or one fixed value), a later override of a key
    replacing an earlier one in its place, then their Cartesian product.

    Written on Hydra's public ``Override`` methods; a test pins it to the basic sweeper's own
    ``split_arguments``.
    """
    from hydra.errors import HydraException

    choices: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:  # interval(...): a continuous range, for optimising sweepers; the error Hydra raises
            raise HydraException(f"BasicSweeper does not support sweep type : {override.value_type.name}")
    return [list(job) for job in itertools.product(*choices.values())]


# Config groups whose choice sets model keys that identify a run: a network of conf/model/ (its shape) and a row
# of a paper's ablation (conf/ablation/: the block and its options).
MODEL_GROUPS = ("model", "ablation")


def _model_keys_of_choice(group: str, option: str, conf_dir) -> dict:
    """The ``model`` keys that choosing ``option`` of ``group`` sets, read from its file (its own keys, not those
    of the files its defaults list extends: the sweep's saved config holds those already)."""
    from ..config.validate import option_file

    path = option_file(conf_dir, group, option)
    if path is None:
        return {}
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    node = content.get("model") if group != "model" else content
    return {key: value for key, value in (node or {}).items() if key != "defaults"}


def _apply_job_override(config, override, groups: set[str], conf_dir=None) -> None:
    """Apply one of a job's overrides to the sweep's saved config, as far as the run's identity goes.

    A config-group choice (``data=synthetic``) is not composed again: the data set's name follows
    it (each data option is named after its file), and a choice of ``MODEL_GROUPS`` sets the model
    keys its file sets. Plain keys, new (``+key``) or forced (``++key``), are set; deletions
    (``~key``) and Hydra's own settings are left alone.
    """
    key = override.key_or_group
    if override.is_delete() or key == "hydra" or key.startswith(("hydra.", "hydra/")):
        return
    if key in groups or "/" in key or override.package is not None:
        if override.package is None and isinstance(override.value(), str):
            if key == "data":
                OmegaConf.update(config, "data.name", override.value(), force_add=True)
            elif key in MODEL_GROUPS:
                for name, value in _model_keys_of_choice(key, override.value(), conf_dir).items():
                    OmegaConf.update(config, f"model.{name}", value, merge=False, force_add=True)
        return
    OmegaConf.update(config, key, override.value(), merge=False, force_add=True)


def _select(config, key: str):
    try:
        return OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
    except Exception:  # an unresolvable value leaves this part of the identity unknown
        return None


IDENTITY_KEYS = ("data.name", "model.depth", "model.att_type", "model.att_placement", "seed")


def identity_from_overrides(overrides: list[str] | None) -> dict:
    """The part of a run's identity its command-line overrides give (``data=...``, ``model.depth=...``, ...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config = OmegaConf.create()
    try:
        for override in OverridesParser.create().parse_overrides(list(overrides or [])):
            if override.key_or_group in ("data", *MODEL_GROUPS, *IDENTITY_KEYS) and not override.is_sweep_override():
                _apply_job_override(config, override, {"data", *MODEL_GROUPS})
        return OmegaConf.to_container(config, resolve=False)
    except Exception:  # overrides that do not parse identify nothing
        return {}


def expected_jobs(multirun_yaml: Path) -> list[tuple[int, Run]]:
    """Every job a Hydra sweep launched (number, identity), rebuilt from its ``multirun.yaml``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    saved = OmegaConf.load(multirun_yaml)
    base = OmegaConf.masked_copy(saved, [key for key in saved if key != "hydra"])
    from ..config.validate import conf_dir_of

    groups = set(_select(saved, "hydra.runtime.choices") or {})
    conf_dir = conf_dir_of(saved.hydra)
    parser = OverridesParser.create()
    found = []
    for number, job in enumerate(sweep_jobs(saved)):
        config = copy.deepcopy(base)
        for override in parser.parse_overrides(job):
            _apply_job_override(config, override, groups, conf_dir)
        identity = Run(str(multirun_yaml.parent / f"{number}_*"), "missing", _select(config, "data.name"),
                       _as_int(_select(config, "model.depth")), _attention_identity(_select(config, "model.att_type"),
                                                                          _select(config, "model.att_placement"),
                                                                          _plain_node(config, "model")),
                       _as_int(_select(config, "seed")),
                       error="no results.json (job never ran or its folder was removed)",
                       config=_container(config), overrides=list(job),
                       network=network_identity(_plain_node(config, "model")))
        found.append((number, identity))
    return found


def _plain_node(config, key: str) -> dict:
    node = _select(config, key)
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})


def _container(config) -> dict:
    """A job's config as plain data, resolved where its interpolations allow (else as written)."""
    try:
        return OmegaConf.to_container(config, resolve=True)
    except Exception:  # an interpolation that needs Hydra's runtime (${hydra:...}) cannot resolve here
        return OmegaConf.to_container(config, resolve=False)
