"""A plugin's settings described from its pydantic model: rows for ``inlet plugins show`` and a commented
YAML block for ``inlet new``.

Both are generated from the settings model (field types, defaults, constraints and the attribute docstrings
that :class:`~inlet.core.connector.PluginSettings` turns into descriptions), so what a plugin author reads
cannot drift from what ``inlet check`` validates. Nested settings models become nested rows / mappings; a
union of settings models (the ``auth`` kinds) is shown as its alternatives.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import orjson
import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

__all__ = ["SettingRow", "setting_rows", "settings_yaml"]


@dataclass(frozen=True)
class SettingRow:
    """One setting: its dotted path in ``settings:``, type, default (or required) and documentation."""

    path: str
    type: str
    default: str
    required: bool
    doc: str


def _members(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a union (``X | None``, ``Annotated[A | B, ...]``), or the annotation alone."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _members(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return tuple(m for a in get_args(annotation) for m in _members(a))
    return (annotation,)


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]


def type_name(annotation: Any) -> str:
    """A type as a plugin author writes it in YAML terms (``str``, ``list[str]``, ``'a' | 'b'``, ``secret``)."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        inner = get_args(annotation)[0]
        return "secret ({env: VAR} or {file: PATH})" if inner is SecretStr else type_name(inner)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(a) for a in get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    if annotation is SecretStr:
        return "secret ({env: VAR} or {file: PATH})"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]  # settings factories take no arguments
    return None if field.default is PydanticUndefined else field.default


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json", exclude_defaults=True) if isinstance(value, BaseModel) else str(value)


def _shown(value: Any) -> str:
    return orjson.dumps(value, default=_plain).decode()


def _doc(field: FieldInfo) -> str:
    parts = []
    for meta in field.metadata:  # ge/gt/le/lt/min_length (annotated_types dataclasses), spelled out
        if dataclasses.is_dataclass(meta):
            parts += [f"{_OPS[f.name]} {getattr(meta, f.name)}" for f in dataclasses.fields(meta) if f.name in _OPS]
    text = " ".join((field.description or "").split())
    return f"{text} ({', '.join(parts)})" if text and parts else text or ", ".join(parts)


_OPS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "at least", "max_length": "at most"}


def setting_rows(model: type[BaseModel], prefix: str = "") -> list[SettingRow]:
    """Every setting of ``model``, depth first; nested models are expanded under their field's path."""
    rows: list[SettingRow] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        models = _models(field.annotation)
        default = "required" if field.is_required() else _shown(_default(field))
        if len(models) == 1 and get_origin(field.annotation) is not list:
            rows.append(
                SettingRow(
                    path,
                    models[0].__name__,
                    default,
                    field.is_required(),
                    _doc(field) or " ".join((models[0].__doc__ or "").split()),
                )
            )
            rows += setting_rows(models[0], prefix=f"{path}.")
        elif len(models) > 1:
            kinds = [_kind(m) for m in models]
            rows.append(
                SettingRow(path, "one of kind: " + " | ".join(kinds), default, field.is_required(), _doc(field))
            )
            for m, kind in zip(models, kinds, strict=True):
                rows += [r for r in setting_rows(m, prefix=f"{path}[kind={kind}].") if not r.path.endswith(".kind")]
        else:
            rows.append(SettingRow(path, type_name(field.annotation), default, field.is_required(), _doc(field)))
    return rows


def _kind(model: type[BaseModel]) -> str:
    field = model.model_fields.get("kind")
    return str(field.default) if field is not None else model.__name__


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1_000).strip().removesuffix("\n...").strip()


def _about(name: str, field: FieldInfo, type_text: str) -> str:
    doc = _doc(field)
    return f"{name} ({type_text}){': ' + doc if doc else ''}"


def settings_yaml(
    model: type[BaseModel],
    values: dict[str, Any] | None = None,
    indent: str = "  ",
    *,
    commented: bool = False,
    in_module: Collection[str] = (),
) -> list[str]:
    """The settings of ``model`` as YAML lines, every field documented in a comment above it.

    Fields given in ``values`` (what the scaffold fills in) and required ones are written; the others are
    commented out at their defaults (a nested settings model as a commented block), so uncommenting lines is
    the whole change a plugin author makes. Fields in ``in_module`` are set by the plugin module (a customer's
    settings model default), so the YAML only says so.
    """
    values = values or {}
    off = "# " if commented else ""
    lines: list[str] = []
    for name, field in model.model_fields.items():
        if name in in_module:
            lines.append(f"{indent}# {name}: set in the plugin module (this customer's default); may be overridden")
            continue
        models = _models(field.annotation)
        given = name in values
        nested = len(models) == 1 and get_origin(field.annotation) is not list
        if nested:
            lines.append(f"{indent}# {_about(name, field, models[0].__name__)}".rstrip())
            if not _doc(field) and models[0].__doc__:
                lines[-1] += ": " + " ".join(models[0].__doc__.split())
            live = not commented and (given or field.is_required())
            lines.append(f"{indent}{'' if live else '# '}{name}:")
            sub = values.get(name) if isinstance(values.get(name), dict) else {}
            lines += settings_yaml(models[0], sub, indent + "  ", commented=not live)
            continue
        type_text = (
            ("one of kind: " + " | ".join(_kind(m) for m in models)) if len(models) > 1 else type_name(field.annotation)
        )
        lines.append(f"{indent}# {_about(name, field, type_text)}")
        if given:
            lines.append(f"{indent}{off}{name}: {_scalar(values[name])}")
        elif field.is_required():
            lines.append(f"{indent}{off}{name}: null  # required: fill in")
        else:
            lines.append(f"{indent}# {name}: {_scalar(_json_default(field))}")
    return lines


def _json_default(field: FieldInfo) -> Any:
    return orjson.loads(_shown(_default(field)))
