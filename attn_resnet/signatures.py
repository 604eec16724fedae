"""The keyword options a class or function takes, read from its source file without importing it.

The config checks use it to refuse an option the chosen optimizer or schedule does not take before
torch (and the optimizer's package, e.g. timm) is imported, and the block registry to read a block's
options, placement and summary for ``--help`` and the command-line check: reading a source file takes
milliseconds, importing it seconds. A callable whose options cannot be read this way (a compiled
module, ``**kwargs``, a name made at run time) gives None, and the caller asks the imported object.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .registry import locate_module

# How many ``from x import Name`` re-exports are followed to the definition (timm.optim -> timm.optim.lion).
_MAX_HOPS = 4


@dataclass(frozen=True)
class DeclaredOptions:
    """Where a callable is defined (``module.Name``) and its keyword options: name -> default as written, or
    "required"."""

    where: str
    options: dict[str, str]


def declared_options(target: str, skip: int) -> DeclaredOptions | None:
    """The options of ``target`` ("module:Name") after its first ``skip`` positional parameters (``self`` not
    counted), as its source declares them; None when they cannot be read without importing it."""
    module, _, name = target.partition(":")
    if not module or not name or "." in name:
        return None
    return _declared(module, name, skip, 0)


def _source(module: str) -> tuple[ast.Module, bool] | None:
    """The parsed source of ``module`` and whether it is a package (its ``__init__.py``)."""
    try:
        spec = locate_module(module)
    except (ImportError, ValueError):  # a module made unimportable on purpose (sys.modules[name] = None)
        return None
    origin = getattr(spec, "origin", None)
    if not origin or not str(origin).endswith(".py"):
        return None
    try:
        return ast.parse(Path(origin).read_text(encoding="utf-8")), Path(origin).name == "__init__.py"
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _declared(module: str, name: str, skip: int, hops: int) -> DeclaredOptions | None:
    found = _definition(module, name, hops)
    if found is None:
        return None
    where, node = found
    options = class_options(node, skip) if isinstance(node, ast.ClassDef) else _options(node.args, skip)
    return None if options is None else DeclaredOptions(where, options)


def definition(target: str) -> ast.ClassDef | ast.FunctionDef | None:
    """The class or function ``target`` ("module:Name") as its source defines it, following ``from x import
    Name`` re-exports; None when it cannot be read without importing it."""
    module, _, name = target.partition(":")
    if not module or not name or "." in name:
        return None
    found = _definition(module, name, 0)
    return None if found is None else found[1]


def class_options(node: ast.ClassDef, skip: int) -> dict[str, str] | None:
    """A class's options: its own ``__init__``'s parameters after ``self`` and the first ``skip``; None without
    an ``__init__`` of its own, or with ``*args`` / ``**kwargs``."""
    init = next((item for item in node.body if isinstance(item, ast.FunctionDef) and item.name == "__init__"), None)
    return None if init is None else _options(init.args, skip + 1)  # + self


@lru_cache(maxsize=None)
def _definition(module: str, name: str, hops: int) -> tuple[str, ast.ClassDef | ast.FunctionDef] | None:
    """``("module.Name", node)`` of the class or function ``name`` of ``module``, following re-exports."""
    parsed = _source(module)
    if parsed is None or hops > _MAX_HOPS:
        return None
    tree, is_package = parsed
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
            return f"{module}.{name}", node
    for node in tree.body:  # a re-export: from .lion import Lion
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = _absolute(module, is_package, node.module, node.level)
                    return None if source is None else _definition(source, alias.name, hops + 1)
    return None


def _absolute(module: str, is_package: bool, imported: str | None, level: int) -> str | None:
    """The absolute name of the module that ``from <level dots><imported> import ...`` in ``module`` reads."""
    if level == 0:
        return imported
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(parts) - 1:
        return None
    base = parts[:len(parts) - (level - 1)]
    return ".".join(base + ([imported] if imported else []))


def _options(arguments: ast.arguments, skip: int) -> dict[str, str] | None:
    """name -> default as written ("required" without one) of the parameters after the first ``skip``, that a
    keyword can set; None with ``*args`` or ``**kwargs`` (the options are not all written down)."""
    if arguments.vararg is not None or arguments.kwarg is not None:
        return None
    positional = [*arguments.posonlyargs, *arguments.args]
    defaults = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    positional_only = len(arguments.posonlyargs)  # not settable by keyword
    options = {argument.arg: "required" if default is None else ast.unparse(default)
               for index, (argument, default) in enumerate(zip(positional, defaults))
               if index >= max(skip, positional_only)}
    options |= {argument.arg: "required" if default is None else ast.unparse(default)
                for argument, default in zip(arguments.kwonlyargs, arguments.kw_defaults)}
    return options
