"""Check the command line's keys and config-group choices against the config files, before Hydra composes.

Hydra refuses a key that no config file declares with "Could not override 'trainer.mixup'. To
append to your config use +trainer.mixup=0.2" (whose hint adds a key that validation then
rejects), and an option that has no file with "Could not find 'optim/adamm'" and its search
path. This check reads the same files -- the entry point's defaults list, the chosen option of
each group, and the ``# @package _global_`` files (experiments, recipes) that add keys and
choose other options -- and says in one paragraph what was wrong, the valid keys or choices, and
the nearest ones. It imports neither torch nor Hydra's composition, so it answers at once.

It refuses only what would fail anyway. Where it cannot tell -- a sweep over a range or glob of
options, an interpolated choice, a block chosen by an experiment's sweep -- it lets the override
through to Hydra and to the validation after composing (``validate.py``). Keys given with '+' or
'++' are deliberate additions, left to that validation too; Hydra's own settings (``hydra.*``,
``hydra/launcher=...``) are Hydra's.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..attention_registry import BLOCKS, canonical_attention, declared_block
from .validate import (LOGGER_GROUP, REPLACED_KEYS, ConfDirs, ConfigError, config_dirs, group_keys, nearest_keys,
                       option_file, option_names, source_folder)

# Hydra's flags (hydra/_internal/utils.py, get_args_parser). With these the check stands aside:
# another config folder or name, help, shell completion and --info are Hydra's business.
_STAND_ASIDE = {"--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc", "--config-path", "-cp",
                "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}
_WITH_VALUE = {"--cfg", "-c", "--package", "-p"}
_PLAIN = {"--resolve", "--run", "-r", "--multirun", "-m"}
ANY = None  # "any option / any block": the check cannot tell, so it accepts what any of them would


def command_line_overrides(argv: list[str]) -> list[str] | None:
    """The overrides among ``argv[1:]``, or None when a flag leaves the command to Hydra."""
    overrides, args = [], iter(argv[1:])
    for arg in args:
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        flag = arg.split("=", 1)[0]
        if flag in _WITH_VALUE:
            if "=" not in arg:
                next(args, None)
        elif flag not in _PLAIN:
            return None  # _STAND_ASIDE, or a flag Hydra's parser explains itself
    return overrides


# ---------------------------------------------------------------- the config files
def defaults_entries(config: Any) -> list[tuple[str, Any, bool]]:
    """(group, option, is_override) of each group entry of a file's defaults list (``_self_`` and
    same-group bases left out); ``override /data: cifar10`` -> ("data", "cifar10", True)."""
    entries = []
    for entry in (config.get("defaults") or []) if isinstance(config, DictConfig) else []:
        if isinstance(entry, DictConfig):
            for key, value in entry.items():
                key = str(key)
                is_override = key.startswith("override ")
                group = key.removeprefix("override ").strip().lstrip("/").split("@")[0]
                entries.append((group, value, is_override))
    return entries


def _is_global(path: Path) -> bool:
    """Whether an option file merges at the top level (``# @package _global_``: experiments, recipes)."""
    try:
        with path.open() as handle:
            return any(line.strip().replace(" ", "") == "#@package_global_" for line, _ in zip(handle, range(5)))
    except OSError:
        return False


@dataclass
class Schema:
    """What the config files let the command line set, for one entry point and its chosen options."""

    conf_dir: list[Path]  # the project's config folder, then the user's (hydra.searchpath)
    config_name: str
    primary: DictConfig
    choices: dict[str, set | None]  # group -> the options it may take (ANY: cannot tell)
    global_groups: set[str]
    added: dict[str, set[str]] = field(default_factory=dict)  # keys the chosen global files add: "" = top level
    att_types: set | None = field(default_factory=set)

    def options(self, group: str) -> list[str]:
        return option_names(self.conf_dir, group)

    def file(self, group: str, option: str) -> Path | None:
        return option_file(self.conf_dir, group, option)

    @property
    def group_nodes(self) -> list[str]:
        """The groups that are nodes of the composed config (``data``), not merged at the top (``experiment``)."""
        return sorted(group for group in self.choices if group not in self.global_groups)

    def top_level_keys(self) -> set[str]:
        keys = {str(key) for key in self.primary if key not in ("defaults", "hydra")}
        return keys | set(self.group_nodes) | self.added.get("", set())

    def keys_of(self, group: str) -> set[str] | None:
        """The keys ``group.<key>`` may name; None when the check cannot tell."""
        chosen = self.choices.get(group, set())
        options = self.options(group) if chosen is ANY else [option for option in chosen if option is not None]
        keys: set[str] = set()
        for option in options:
            keys |= group_keys(self.conf_dir, group, str(option))
        node = self.primary.get(group)
        if isinstance(node, DictConfig):
            keys |= {str(key) for key in node}  # evaluate.yaml's own data.* keys
        keys |= self.added.get(group, set())
        return keys or None

    def block_options(self) -> set[str] | None:
        """The options of the blocks the run may build (``model.reduction``); None when it cannot tell."""
        names = self.att_types
        if names is ANY or any(canonical_attention(name) is None for name in names):
            return ANY  # an unknown att_type is reported by validation, naming the valid ones
        options: set[str] = set()
        for name in {canonical_attention(name) for name in names} - {"none"}:
            declared = declared_block(name)
            if declared is None:
                return ANY
            options |= set(declared.options)
        return options

    def all_names(self) -> set[str]:
        """Every settable key by its full name (``seed``, ``aug.mixup``), for "did you mean"."""
        names = set(self.top_level_keys())
        for group in self.group_nodes:
            names |= {f"{group}.{key}" for key in self.keys_of(group) or ()}
        return names


def _option_values(override: Any, schema: Schema, group: str) -> set | None:
    """The options a group override chooses (several for a sweep, or a list of several at once:
    ``logger=[tensorboard,mlflow]``); ANY for a range or an interpolation."""
    from hydra.core.override_parser.types import ValueType

    kind = override.value_type
    if kind == ValueType.ELEMENT:
        values = [override.value()]
    elif kind in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
        values = list(override.value().list)
    elif kind == ValueType.GLOB_CHOICE_SWEEP:
        values = override.value().filter(schema.options(group))
    else:
        return ANY
    values = [item for value in values for item in (value if isinstance(value, list) else [value])]
    if any(not isinstance(value, (str, int, float)) and value is not None or "${" in str(value) for value in values):
        return ANY
    return {None if value is None else str(value) for value in values}


def _element_values(override: Any) -> set | None:
    """The values a plain key override gives (several for a sweep), as strings; ANY where it cannot tell."""
    from hydra.core.override_parser.types import ValueType

    if override.value_type == ValueType.ELEMENT:
        values = [override.value()]
    elif override.value_type in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
        values = list(override.value().list)
    else:
        return ANY
    if any("${" in str(value) for value in values):
        return ANY
    return {"none" if value is None else str(value) for value in values}


def _is_hydra(key: str) -> bool:
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def build_schema(conf_dir: ConfDirs, config_name: str, overrides: list[Any]) -> Schema:
    """The keys and choices the config files allow, given the command line's group choices."""
    conf_dir = config_dirs(conf_dir)
    primary = OmegaConf.load(conf_dir[0] / f"{config_name}.yaml")
    choices: dict[str, set | None] = {group: {None if option is None else str(option)}
                                      for group, option, _ in defaults_entries(primary)}
    schema = Schema(conf_dir, config_name, primary, choices, set())
    given: set[str] = set()
    att_types: set | None = set()
    for override in overrides:
        key = override.key_or_group
        if _is_hydra(key) or override.is_delete() or override.package is not None:
            continue
        if "." not in key and (key in choices or (override.type.name == "ADD" and schema.options(key))):
            choices[key] = _option_values(override, schema, key)
            given.add(key)
        elif key == "model.att_type":
            values = _element_values(override)
            att_types = ANY if values is ANY or att_types is ANY else att_types | values
    schema.global_groups = {group for group in choices
                            if any(_is_global(path) for folder in conf_dir for path in (folder / group).glob("*.yaml"))}
    # The chosen global files: the keys they add, and the options they choose (unless the command line did).
    chosen_globals = [(group, option) for group in sorted(schema.global_groups)
                      for option in (schema.options(group) if choices[group] is ANY else choices[group])
                      if option is not None]
    for group, option in chosen_globals:
        path = schema.file(group, str(option))
        if path is None:
            continue
        content = OmegaConf.load(path)
        for key, value in content.items():
            if key in ("defaults", "hydra"):
                continue
            schema.added.setdefault("", set()).add(str(key))
            if isinstance(value, DictConfig):
                schema.added.setdefault(str(key), set()).update(str(k) for k in value)
        for target, value, _ in defaults_entries(content):
            if target in choices and target not in given and choices[target] is not ANY:
                choices[target] = choices[target] | {None if value is None else str(value)}
    if not att_types and att_types is not ANY:
        # Not on the command line: the model file's block, unless a global file may choose another
        # (an experiment's sweep over blocks): then any block's options may be meant.
        att_types = ANY if chosen_globals else {
            str(OmegaConf.load(schema.file("model", str(option))).get("att_type"))
            for option in choices.get("model") or () if option is not None and schema.file("model", str(option))}
    schema.att_types = att_types
    return schema


# ---------------------------------------------------------------- the messages
def _entry(config_name: str) -> str:
    return f"{config_name}.py"


def bad_option(schema: Schema, group: str, value: str) -> ConfigError:
    options = schema.options(group)
    by_lower = {option.lower(): option for option in options}
    near = [by_lower[name] for name in difflib.get_close_matches(value.lower(), list(by_lower), n=3, cutoff=0.5)]
    hint = f"Did you mean {' or '.join(f'{group}={name}' for name in near)}? " if near else ""
    searched = ("" if len(schema.conf_dir) == 1 else
                f", nor has any folder of hydra.searchpath ({', '.join(map(str, schema.conf_dir[1:]))})")
    own = ("" if near or len(schema.conf_dir) > 1 else
           f" A file of your own is found in your config folder with hydra.searchpath=[file:///path/to/conf] "
           f"(it holds {group}/{value}.yaml).")
    return ConfigError(
        f"Invalid config choice {group}={value}: conf/{group}/ has no {value}.yaml{searched}. {hint}Valid choices "
        f"of {group}: {', '.join(options)}. Fix it on the command line, e.g. "
        f"{group}={near[0] if near else options[0]}.{own}"
    )


def options_declaring(schema: Schema, key: str, group: str) -> list[str]:
    """The options not chosen that would declare ``key``: ``data=digits`` for ``data.val_fraction``,
    ``experiment=attention_cifar10`` (a global file) for ``seeds``."""
    found = []
    leaf = key.partition(".")[2].split(".")[0] if group else key.split(".")[0]
    groups = [group] if group else sorted(schema.global_groups)
    for name in groups:
        chosen = schema.choices.get(name) or set()
        for option in schema.options(name):
            if option in chosen:
                continue
            keys = group_keys(schema.conf_dir, name, option) if group else \
                {str(k) for k in OmegaConf.load(schema.file(name, option)) if k not in ("defaults", "hydra")}
            if leaf in keys:
                found.append(f"{name}={option}")
    return found


def unknown_key(schema: Schema, key: str, group: str, valid: set[str], usage: str, note: str = "") -> ConfigError:
    """``usage`` spells the fix with a key in place of ``{}``: ``{}=0.2``, or ``~{}`` for a deletion."""
    declaring = options_declaring(schema, key, group)
    if declaring and not note:
        shown = ", ".join(declaring[:4]) + (f" and {len(declaring) - 4} more" if len(declaring) > 4 else "")
        note = (f"{shown} declare{'s' if len(declaring) == 1 else ''} it: choose "
                f"{declaring[0] if len(declaring) == 1 else 'one of them'} to set it. ")
    near = [] if note else nearest_keys(key, group, valid, schema.all_names())
    hint = f"Did you mean {' or '.join(near)}? " if near else ""
    if group:
        chosen = schema.choices.get(group)
        files = ", ".join(f"{group}={option}" for option in sorted(chosen or ()) if option is not None)
        where = f"no file of the chosen {group} config ({files}) declares it" if files else "no config file declares it"
        listed = f"Valid keys of {group}: {', '.join(sorted(valid))}."
    else:
        where = f"{_entry(schema.config_name)}'s config has no such top-level key or config group"
        plain = sorted(valid - set(schema.choices))
        listed = (f"Valid top-level keys: {', '.join(plain)}; config groups: {', '.join(sorted(schema.choices))} "
                  f"(group=option; group.key=value for {', '.join(schema.group_nodes)}).")
    fix = f"Fix the key on the command line, e.g. {usage.format(near[0])}." if near else \
        "Fix the key on the command line."
    return ConfigError(f"Unknown config key {key!r}: {where}. {note}{hint}{listed} {fix}")


# ---------------------------------------------------------------- the check
def search_path_dirs(overrides: list[Any]) -> list[Path]:
    """The folders a ``hydra.searchpath=[...]`` override adds (file:// and pkg:// entries that exist)."""
    folders = []
    for override in overrides:
        if override.key_or_group != "hydra.searchpath" or override.is_delete():
            continue
        value = override.value()
        for entry in value if isinstance(value, list) else [value]:
            folder = source_folder(str(entry))
            if folder is not None and folder.is_dir():
                folders.append(folder)
    return folders


def check_overrides(argv: list[str], config_name: str, conf_dir: ConfDirs) -> None:
    """ConfigError for the first key or group option of ``argv`` that the config files do not have (those of the
    project's folder and of any ``hydra.searchpath=[...]`` the command line adds)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    arguments = command_line_overrides(argv)
    conf_dir = config_dirs(conf_dir)
    if not arguments or not (conf_dir[0] / f"{config_name}.yaml").is_file():
        return
    try:
        overrides = OverridesParser.create().parse_overrides(arguments)
    except HydraException:
        return  # a syntax error: Hydra's parser message points at the character
    schema = build_schema([*conf_dir, *search_path_dirs(overrides)], config_name, overrides)
    top = schema.top_level_keys()
    for override in overrides:
        key = override.key_or_group
        if _is_hydra(key):
            continue
        value = override.input_line.partition("=")[2]
        usage = "~{}" if override.is_delete() else "{}=" + value.replace("{", "{{").replace("}", "}}")
        if "." not in key and (key in schema.choices or (override.type.name == "ADD" and schema.options(key))):
            if override.is_delete():
                continue
            for value in _option_values(override, schema, key) or ():
                if value is not None and schema.file(key, value) is None:
                    raise bad_option(schema, key, value)
                if value is None and key == LOGGER_GROUP and not _defaults_to_none(schema, key):
                    raise _null_choice(schema, key)
            continue
        if key in REPLACED_KEYS and not override.is_delete():
            raise ConfigError(REPLACED_KEYS[key])
        if override.type.name in ("ADD", "FORCE_ADD"):
            continue  # deliberate: a new key (or one forced in), checked by validation after composing
        head, _, rest = key.partition(".")
        if head not in top:
            raise unknown_key(schema, key, "", top, usage)
        if head not in schema.group_nodes or not rest:
            continue
        leaf = rest.split(".")[0]
        valid = schema.keys_of(head)
        if valid is None or leaf in valid:
            continue
        note = ""
        if head == "model":
            blocks = schema.block_options()
            if blocks is ANY or leaf in blocks:
                continue
            takers = [name for name in BLOCKS.names() if leaf in getattr(declared_block(name), "options", {})]
            if takers:
                att = ",".join(sorted(schema.att_types or ()))
                note = (f"model.{leaf} is an option of the {', '.join(takers)} block{'s' if len(takers) > 1 else ''} "
                        f"and model.att_type={att} takes no such option: choose a block that does "
                        f"(e.g. model.att_type={takers[0]}) to set it. ")
            valid = valid | blocks  # the chosen block's options are valid model.* keys too (model.reduction)
        raise unknown_key(schema, key, head, valid, usage, note)
    _check_typed_stems(overrides)


def _defaults_to_none(schema: Schema, group: str) -> bool:
    """Whether the entry point's defaults list leaves ``group`` out by default (``recipe: null``)."""
    return any(option is None for name, option, _ in defaults_entries(schema.primary) if name == group)


def _null_choice(schema: Schema, group: str) -> ConfigError:
    """``logger=null`` while the defaults list chooses a logger, which Hydra refuses with "Config group override must
    be a string or a list. Got NoneType"."""
    default = next((option for name, option, _ in defaults_entries(schema.primary) if name == group), None)
    return ConfigError(f"Invalid config choice {group}=null: {_entry(schema.config_name)} chooses {group}={default} "
                       f"by default, and Hydra cannot set a group chosen in the defaults list to null. To run "
                       f"without loggers, give an empty list: {group}=[] (or ~{group}).")


def _check_typed_stems(overrides: list[Any]) -> None:
    """ConfigError when the command line gives ``data.stem`` and its older spelling ``data.network_type`` for two
    different stems. (Once composed, a stem typed to equal the dataset's default cannot be told from the conf
    file's, so this is the place that sees both as the user wrote them.)"""
    from ..dataset_registry import different_stems, stem_of

    typed = {override.key_or_group: override.value() for override in overrides
             if override.key_or_group in ("data.stem", "data.network_type") and not override.is_sweep_override()
             and not override.is_delete()}
    stem, alias = typed.get("data.stem"), typed.get("data.network_type")
    if not isinstance(stem, str) or not isinstance(alias, str) or stem_of(stem) is None or stem_of(alias) is None:
        return  # one of them (or a value that validation will name)
    if stem_of(stem) != stem_of(alias):
        raise ConfigError(str(different_stems(stem, alias)))
