"""Finds connector plugins: in-tree under ``connectors/`` and out-of-tree by entry point.

A plugin is a :class:`~core.connector.Connector` subclass with a non-empty ``name``. In-tree plugins are
found by importing the ``connectors`` package tree; separately installed distributions register
``name = "module:Class"`` in the entry-point group ``inlet.connectors``. Both end up in one mapping, and
two different classes claiming one name is an error rather than a silent override.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from functools import cache
from importlib.metadata import entry_points
from typing import Any, NamedTuple

from inlet.core.connector import Connector
from inlet.core.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "PluginOrigin", "family_of", "find_plugin", "origin_of", "plugins"]

ENTRY_POINT_GROUP = "inlet.connectors"


class PluginOrigin(NamedTuple):
    """Where a plugin comes from: the distribution that installed it and its version."""

    distribution: str
    version: str


_ORIGINS: dict[str, PluginOrigin] = {}


def _subclasses(cls: type[Connector[Any]]) -> list[type[Connector[Any]]]:
    out: list[type[Connector[Any]]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


@cache
def plugins() -> dict[str, type[Connector[Any]]]:
    """Every known plugin by name (imports the in-tree connectors once)."""
    from inlet import connectors

    for mod in pkgutil.walk_packages(connectors.__path__, prefix="inlet.connectors."):
        importlib.import_module(mod.name)
    found: dict[str, type[Connector[Any]]] = {}

    def add(name: str, cls: type[Connector[Any]], origin: str) -> None:
        other = found.get(name)
        if other is not None and other is not cls:
            raise ConfigError(
                f"plugin name {name!r} is claimed by {other.__module__}.{other.__qualname__} "
                f"and by {cls.__module__}.{cls.__qualname__} ({origin})"
            )
        found[name] = cls

    from inlet import __version__

    for cls in _subclasses(Connector):  # type: ignore[type-abstract]  # walking the abstract root is the point
        if cls.__dict__.get("name"):
            add(cls.name, cls, "in-tree")
            if cls.__module__.startswith("inlet."):
                _ORIGINS[cls.name] = PluginOrigin("inlet", __version__)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        loaded = ep.load()
        if not (isinstance(loaded, type) and issubclass(loaded, Connector)):
            raise ConfigError(f"entry point {ep.name} = {ep.value} is not a Connector subclass")
        add(ep.name, loaded, f"entry point {ep.value}")
        if ep.dist is not None and ep.dist.name != "inlet":
            _ORIGINS[ep.name] = PluginOrigin(ep.dist.name, ep.dist.version)
    return found


def origin_of(name: str) -> PluginOrigin:
    """The distribution (and version) that provides plugin ``name``."""
    plugins()
    return _ORIGINS.get(name, PluginOrigin("-", "-"))


def family_of(cls: type[Connector[Any]]) -> str:
    """The family a plugin belongs to: the nearest base class declaring a scaffold (``inlet new``), else '-'."""
    for base in cls.__mro__:
        scaffold = base.__dict__.get("scaffold")
        family = getattr(scaffold, "family", None)
        if isinstance(family, str):
            return family
    return "-"


def find_plugin(name: str) -> type[Connector[Any]]:
    """The plugin called ``name``; the error lists the closest known names."""
    known = plugins()
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown plugin {name!r}{hint} (known: {', '.join(sorted(known))})", key="plugin")
