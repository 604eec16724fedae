"""One registry shape for everything a user can add: attention blocks, datasets, optimizers, schedules.

A ``Registry`` maps names to where their object lives ("module:attribute", imported only when
used) or to the object itself (registered at run time, e.g. ``attn_resnet.register_block``). Beside
its own entries it finds, without being told:

- the entry points of installed packages in its group (``attn_resnet.blocks``, ``attn_resnet.datasets``,
  ``attn_resnet.optimizers``, ``attn_resnet.schedules``), by their name: a package declares
  ``MyGate = "mypkg.gates:MyGate"`` under ``[project.entry-points."attn_resnet.blocks"]``;
- a dotted path, ``package.module:Attribute`` or ``package.module.Attribute``, wherever a name is taken.

Finding a name imports nothing (entry points are read from the installed packages' metadata, and a
path's module is located on the Python path without running it), so the config checks stay fast and
torch-free; ``load`` imports. What ``find`` returns (``Found``) says where the object lives and which
installed package provides it, which is what a run records so that another process can find it again.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["Found", "Registry", "RegistryError", "locate_module", "parse_path", "source_of"]

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = re.compile(rf"^(?P<module>{_IDENTIFIER}(?:\.{_IDENTIFIER})*)(?::|\.)(?P<attribute>{_IDENTIFIER}(?:\.{_IDENTIFIER})*)$")

# The package a module needs, and how to install it, for the ones outside the core dependencies.
INSTALL_HINTS = {
    "timm": 'pip install "timm>=1.0" (or: pip install -e ".[recipes]")',
}


class RegistryError(ValueError):
    """A name that is not registered, an object that cannot be imported, or an option its callable does not take."""


def parse_path(text: Any) -> tuple[str, str] | None:
    """``(module, attribute)`` of a dotted path ("pkg.mod:Cls" or "pkg.mod.Cls"); None for a plain name.

    With a colon the split is explicit (the attribute may be nested: "pkg.mod:Outer.Inner"); without
    one, the last dotted part is the attribute.
    """
    if not isinstance(text, str):
        return None
    if ":" in text:
        module, _, attribute = text.partition(":")
        match = _PATH.match(f"{module}:{attribute}")
        return (module, attribute) if match and match.group("module") == module else None
    if "." not in text:
        return None
    module, _, attribute = text.rpartition(".")
    return (module, attribute) if _PATH.match(text) else None


def locate_module(module: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of ``module`` found on the Python path without running it or its parent packages; None when
    there is no such module. (``importlib.util.find_spec`` would import the parents, and with them torch.)"""
    import sys

    if module in sys.modules:
        return getattr(sys.modules[module], "__spec__", None) or importlib.util.find_spec(module)
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
        for index in range(1, len(parts)):
            name = ".".join(parts[:index + 1])
            if name in sys.modules:
                spec = getattr(sys.modules[name], "__spec__", None)
                continue
            if spec is None or not spec.submodule_search_locations:
                return None
            spec = _child_spec(name, list(spec.submodule_search_locations))
    except (ImportError, ValueError):
        return None
    return spec


def _child_spec(name: str, locations: list[str]) -> importlib.machinery.ModuleSpec | None:
    """The spec of submodule ``name`` in its parent's ``locations``, read from the files alone (a package, a
    module, or a folder without ``__init__.py``, which Python imports as a namespace package)."""
    from pathlib import Path

    leaf = name.rpartition(".")[2]
    for location in locations:
        folder = Path(location) / leaf
        if (folder / "__init__.py").is_file():
            return importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                          submodule_search_locations=[str(folder)])
        for suffix in importlib.machinery.all_suffixes():
            if (Path(location) / f"{leaf}{suffix}").is_file():
                return importlib.util.spec_from_file_location(name, Path(location) / f"{leaf}{suffix}")
    for location in locations:
        folder = Path(location) / leaf
        if folder.is_dir():
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(folder)]
            return spec
    return None


@lru_cache(maxsize=None)
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def source_of(module: str) -> tuple[str | None, str | None]:
    """``(distribution, version)`` of the installed package that provides ``module``; (None, None) when none
    does (a module on the Python path that pip did not install, e.g. a script's folder)."""
    top = module.split(".")[0]
    names = _distributions().get(top) or []
    if not names:
        return None, None
    try:
        return names[0], importlib.metadata.version(names[0])
    except importlib.metadata.PackageNotFoundError:
        return names[0], None


@dataclass(frozen=True)
class Found:
    """Where a registry found a name.

    ``name``: its canonical spelling (the registered name, or "module:Attribute" for a path);
    ``target``: "module:Attribute" where the object lives; ``origin``: "built-in", "registered",
    "entry point" or "path"; ``obj``: the object, for run-time registrations; ``distribution`` and
    ``version``: the installed package that provides it, when one does.
    """

    name: str
    target: str
    origin: str
    obj: Any = None
    distribution: str | None = None
    version: str | None = None

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def external(self) -> bool:
        """Whether it comes from outside this package."""
        return self.origin != "built-in"

    def record(self) -> dict[str, Any]:
        """What a run records so that another process finds the object again: its import path and package."""
        distribution, version = self.distribution, self.version
        if distribution is None:
            distribution, version = source_of(self.module)
        return {"target": self.target, "origin": self.origin, "package": distribution, "version": version}


def _target_of(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


class Registry(dict):
    """``name -> "module:attribute"`` or the object itself, for one kind of thing (``kind``, e.g. "attention
    block"), plus the entry points of ``group`` and dotted paths.

    ``ignore_case``: names match whatever their case ("cbam" finds "CBAM"); paths always match exactly.
    A name is registered once: ``register`` refuses a second object under a taken name (as torchvision's
    ``register_model`` does) unless ``replace=True``.
    """

    def __init__(self, kind: str, group: str, entries: dict[str, Any] | None = None, *,
                 ignore_case: bool = False) -> None:
        super().__init__(entries or {})
        self.kind = kind
        self.group = group
        self.ignore_case = ignore_case
        self._builtin = frozenset(self)

    # ------------------------------------------------------------ registration
    def register(self, name: str, obj: Any, *, replace: bool = False) -> None:
        """Add ``obj`` (or a "module:attribute" string) under ``name``."""
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_\-]*", name):
            raise RegistryError(f"Cannot register the {self.kind} {name!r}: a name is letters, digits, '_' and '-' "
                                f"(no dots or colons, which mark import paths).")
        taken = self._own_name(name)
        if taken is not None and not replace and self[taken] is not obj and self[taken] != obj:
            raise RegistryError(f"The {self.kind} name {taken!r} is taken (by {self._describe(taken)}). Register "
                                f"yours under another name, or pass replace=True to replace it.")
        if taken is not None and taken != name:
            del self[taken]
        self[name] = obj

    def unregister(self, name: str) -> None:
        taken = self._own_name(name)
        if taken is not None:
            del self[taken]

    # ---------------------------------------------------------------- lookup
    def entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        """The installed packages' entry points of this registry's group, by name."""
        return _entry_points(self.group)

    def names(self) -> tuple[str, ...]:
        """Every name it knows: its own entries (built-in, then registered), then the entry points'."""
        own = list(self)
        return (*own, *(name for name in self.entry_points() if self._own_name(name) is None))

    def find(self, value: Any) -> Found | None:
        """Where ``value`` (a name, a dotted path, or a registered object) lives; None when nowhere."""
        if isinstance(value, str):
            own = self._own_name(value)
            if own is not None:
                entry = self[own]
                origin = "built-in" if own in self._builtin else "registered"
                if isinstance(entry, str):
                    return Found(own, entry, origin)
                return Found(own, _target_of(entry), origin, obj=entry)
            point = self._entry_point(value)
            if point is not None:
                name, entry_point = point
                dist = getattr(entry_point, "dist", None)
                return Found(name, entry_point.value.replace(" ", ""), "entry point",
                             distribution=getattr(dist, "name", None), version=getattr(dist, "version", None))
            path = parse_path(value)
            if path is not None:
                return Found(f"{path[0]}:{path[1]}", f"{path[0]}:{path[1]}", "path")
            return None
        for name, entry in self.items():
            if entry is value:
                return self.find(name)
        return None

    def canonical(self, value: Any) -> str | None:
        """The canonical spelling of ``value``; None when it names nothing this registry can find."""
        found = self.find(value)
        return None if found is None else found.name

    def load(self, value: Any) -> Any:
        """The object ``value`` names, imported; RegistryError naming the module and the package to install."""
        found = self.find(value)
        if found is None:
            raise RegistryError(f"Unknown {self.kind} {value!r}. Valid choices: {', '.join(self.names())}; or "
                                f"an import path, package.module:Name.")
        if found.obj is not None:
            return found.obj
        return self.import_found(found)

    def import_found(self, found: Found) -> Any:
        module_name, _, attribute = found.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            raise self.missing_module(found, module_name, error) from None
        except Exception as error:  # noqa: BLE001 - the user's module raised while importing: say which
            raise RegistryError(f"The {self.kind} {found.name!r} lives in the module {module_name!r}, which raised "
                                f"{type(error).__name__} while importing: {error}. Fix that module (import it in "
                                f"Python to see the traceback).") from error
        obj: Any = module
        for part in attribute.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise RegistryError(f"The module {module_name!r} has no {attribute!r}, where the {self.kind} "
                                    f"{found.name!r} should be ({found.origin}). Check the spelling of the import "
                                    f"path (package.module:Name).")
        return obj

    def missing_module(self, found: Found, module_name: str, error: BaseException | None = None) -> RegistryError:
        """The one-paragraph error for a module that cannot be found."""
        top = module_name.split(".")[0]
        missing = getattr(error, "name", None) or module_name
        if top in INSTALL_HINTS and missing.split(".")[0] == top:
            return RegistryError(f"The {self.kind} {found.name!r} comes from the package {top!r}, which is not "
                                 f"installed ({error}). Install it: {INSTALL_HINTS[top]}.")
        package = found.distribution or top
        return RegistryError(
            f"The {self.kind} {found.name!r} lives in the module {module_name!r}, which cannot be imported here "
            f"(no module named {missing!r} on the Python path). Install the package that provides it (e.g. "
            f"pip install {package}, or pip install -e path/to/{package} for your own), or put its folder on "
            f"PYTHONPATH; check the spelling of the import path (package.module:Name).")

    def check_importable(self, found: Found) -> Found:
        """``found``, once its module is known to be on the Python path (looked up without importing it);
        RegistryError naming the module and the package to install otherwise."""
        if found.obj is None and locate_module(found.module) is None:
            raise self.missing_module(found, found.module)
        return found

    # --------------------------------------------------------------- private
    def _own_name(self, name: str) -> str | None:
        if name in self:
            return name
        if self.ignore_case:
            return next((own for own in self if own.lower() == name.lower()), None)
        return None

    def _entry_point(self, name: str) -> tuple[str, importlib.metadata.EntryPoint] | None:
        points = self.entry_points()
        if name in points:
            return name, points[name]
        if self.ignore_case:
            return next(((own, point) for own, point in points.items() if own.lower() == name.lower()), None)
        return None

    def _describe(self, name: str) -> str:
        entry = self[name]
        return entry if isinstance(entry, str) else _target_of(entry)


def _entry_points(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    import os
    import sys

    # Read again when the Python path or one of its folders changes (installing a package adds its
    # dist-info folder to site-packages, which changes that folder's mtime): a package installed during
    # a session (a notebook, a test) is seen at once, and reports that look names up per row stay fast.
    stamps = []
    for entry in sys.path:
        try:
            stamps.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            stamps.append((entry, None))
    return _entry_points_on(group, tuple(stamps))


@lru_cache(maxsize=32)
def _entry_points_on(group: str, path_stamps: tuple) -> dict[str, importlib.metadata.EntryPoint]:
    return {point.name: point for point in importlib.metadata.entry_points(group=group)}
