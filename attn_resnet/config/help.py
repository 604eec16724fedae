"""The lists of ``train.py --help`` and ``evaluate.py --help``: each config group the entry point uses, with
its options and one line each, and the attention blocks with their options.

Hydra's own ``$APP_CONFIG_GROUPS`` lists every folder under ``conf/`` with bare option names, the
training-only ones in evaluate.py's help too. These lists come from the same files instead: the
groups of the entry point's defaults list, each option's first comment line, and each block's
docstring and constructor as its source declares them. Torch-free, so ``--help`` stays quick.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from ..attention_registry import BLOCKS, NO_ATTENTION, declared_block, placement_names
from .command_line import defaults_entries
from .validate import ConfDirs, config_dirs, option_file, option_names


def description(path: Path, limit: int = 150) -> str:
    """What a config file is, from its first comment: the first sentence of its opening comment lines
    (after any ``# @package`` line), cut to ``limit`` characters; "" when the file starts with a key."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("# @package") or (not text and not words):
            continue
        if not text.startswith("#") or text == "#":
            break
        words.append(text.lstrip("#").strip())
        if words[-1].endswith("."):
            break
    joined = " ".join(words)
    # The first sentence: up to a full stop at the end of a line or before a capital letter.
    match = re.search(r"\.\s+(?=[A-Z(])", joined)
    sentence = joined[:match.start() + 1] if match else joined
    return sentence if len(sentence) <= limit else sentence[:limit].rsplit(" ", 1)[0] + " ..."


def _group_lines(conf_dir: ConfDirs, group: str, default: str | None, optional: bool = True) -> list[str]:
    paths = [option_file(conf_dir, group, name) for name in option_names(conf_dir, group)]
    width = max((len(path.stem) for path in paths), default=0) + 1
    lines = [f"{group}:" + ("  (none by default)" if default is None and optional else "")]
    for path in paths:
        mark = "*" if path.stem == default else " "
        lines.append(f"  {path.stem:<{width}}{mark} {description(path)}".rstrip())
    return lines


def block_lines() -> list[str]:
    """One line per attention block: its name, what it is, its own placement and its options; a block of an
    installed package (entry point) or one registered at run time also says where it comes from."""
    names = BLOCKS.names()
    width = max(len(name) for name in names) + 2
    lines = [f"  {NO_ATTENTION:<{width}} no attention: the plain ResNet"]
    for name in names:
        found = BLOCKS.find(name)
        origin = ""
        if found.origin == "entry point":
            package = f"{found.distribution} {found.version}" if found.distribution else found.target
            origin = f" [from {package}: {found.target}]"
        elif found.origin == "registered":
            origin = f" [registered: {found.target}]"
        block = declared_block(name)
        if block is None:
            lines.append(f"  {name}{origin}")
            continue
        options = ", ".join(f"{key}={value}" for key, value in block.options.items()) or "none"
        lines.append(f"  {name:<{width}} {block.summary} Placement: {block.placement}; options: {options}."
                     f"{origin}")
    lines.append(f"  {'<path>':<{width}} a block of your own by import path: model.att_type=package.module:Class "
                 f"(docs/extending.md).")
    return lines


def config_help(config_name: str, conf_dir: ConfDirs) -> str:
    """The groups (with options) of ``conf/<config_name>.yaml`` and the attention blocks, as help text; with
    several config folders (``hydra.searchpath``), the options of all of them."""
    folders = config_dirs(conf_dir)
    primary = OmegaConf.load(folders[0] / f"{config_name}.yaml")
    lines = ["== Config groups ==", "Choose an option with group=option (* the default); each file's first comment "
             "says what it is: conf/<group>/<option>.yaml.", ""]
    for group, option, _ in defaults_entries(primary):
        if option_names(folders, group):
            lines += _group_lines(folders, group, None if option is None else str(option))
    if config_name == "train":
        # Hydra's own groups that the project ships presets for (hydra/launcher=slurm).
        for folder in sorted(path for path in (folders[0] / "hydra").glob("*") if path.is_dir()):
            lines += _group_lines(folders, f"hydra/{folder.name}", None, optional=False)
    lines += ["", "== Attention blocks ==",
              "model.att_type=<block> (any case); model.att_placement=" + "|".join(placement_names())
              + " moves it; "
              "model.<option>=value sets an option of the block.", *block_lines()]
    return "\n".join(lines)
