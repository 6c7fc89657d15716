"""The base of every event contract, and the registry of contracts by name and version.

A contract is a pydantic model per name and major version with a ``MAJOR.MINOR`` version. The
model itself knows what the envelope needs from it (the entity key, the subject, when it happened),
so the pipeline never has to know a contract's fields.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "DECIMAL_PATTERN",
    "MAX_DECIMAL_CHARS",
    "Compatibility",
    "Contract",
    "DecimalString",
    "Monitoring",
    "Part",
    "Precision",
    "all_contracts",
    "checked_instance",
    "converter",
    "converters_from",
    "get_contract",
    "plain_decimal",
    "published",
    "register",
    "unregister_converter",
]

Precision = Literal["year", "month", "day", "minute", "second", "millisecond", "microsecond"]
"""How precise a source timestamp was (the values of core.time's ``Instant.precision``)."""

Compatibility = Literal["BACKWARD", "FORWARD", "FULL"]
"""How a new minor must relate to every earlier minor of its major (see contracts.compat)."""


DECIMAL_PATTERN: Final = r"^-?[0-9]+(\.[0-9]+)?$"
"""A plain decimal number: optional minus, ASCII digits, optional fraction; no exponent, no grouping."""

MAX_DECIMAL_CHARS: Final = 1000
"""The longest plain-notation decimal a contract takes from a :class:`~decimal.Decimal`. A guard, not a need: the
JSON ``1e999999999`` is 11 bytes but a billion digits written out, so longer values are refused, never built.
Far beyond any measured value, and beyond what a double can hold at all (``1e308`` is 309 characters), so the
extremes of FHIR's own decimal example (``1.000000000000000000E-245``: 247 characters) still fit."""


def plain_decimal(value: Decimal) -> str:
    """``value`` in plain notation keeping its scale (``Decimal("5.10")`` → ``"5.10"``, ``Decimal("1E-3")`` →
    ``"0.001"``, ``Decimal("1.50E+2")`` → ``"150"``); ValueError for a non-finite value or one longer than
    :data:`MAX_DECIMAL_CHARS` written out. Exact: no digit is added or dropped but the zeros an exponent implies."""
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite decimal")
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    size = len(digits) + exponent if exponent >= 0 else max(len(digits), -exponent) + 2
    if size > MAX_DECIMAL_CHARS:
        raise ValueError(
            f"a decimal of {len(digits)} digits and exponent {exponent} would be about {size} characters "
            f"written out (more than {MAX_DECIMAL_CHARS})"
        )
    return format(value, "f")


def _decimal_as_string(value: Any) -> Any:
    """Let a finite Decimal in as its plain-notation string; refuse numbers, which may have rounded."""
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, int | float):
        raise ValueError("a decimal must be given as a string or Decimal, never a number (floats round)")
    return value


DecimalString = Annotated[str, BeforeValidator(_decimal_as_string), Field(pattern=DECIMAL_PATTERN)]
"""An exact decimal as a string: money, quantities, rates, measured values (JSON Schema: ``string`` with
:data:`DECIMAL_PATTERN`). A ``str`` must match the pattern; a :class:`~decimal.Decimal` is written in plain
notation keeping its scale (:func:`plain_decimal`); an ``int`` or ``float`` is refused — a float has already
rounded, and a producer that holds one must decide how to write it (``erp.invoice``, ``clinical.observation``
v2 say how theirs do)."""


class _Closed(BaseModel):
    """What every contract model is, the event and its parts alike: closed (an unknown field is an error, and the
    schema says ``additionalProperties: false``) and immutable.

    Not the settings base (``core.connector.PluginSettings``), though the config reads the same today: this one is
    part of the published schemas, which the compatibility gates guard, and contracts import nothing of the core.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class Part(_Closed):
    """Base of the nested parts of a contract (codings, lines, values): closed and immutable like the event."""


@dataclass(frozen=True)
class Monitoring:
    """What the data-quality monitors (``core.monitors``) watch on a contract's events unless an integration's
    ``monitors.fields`` says otherwise. A path is dotted attribute names; ``name[0]`` takes a list's first item,
    ``name[]`` each item (categories only). The contract knows which of its fields are measurements and which
    series they belong to, so every integration producing it is watched with no configuration at all."""

    numeric: tuple[str, ...] = ()
    """Measured values, watched for level shifts and distribution moves per series."""
    series: tuple[str, ...] = ()
    """The fields that name a series of ``numeric`` values (a meter and its metric; a lab code); none: one series."""
    categories: tuple[str, ...] = ()
    """Codes whose share of events is watched (a category, a currency, a unit)."""
    nulls: tuple[str, ...] = ()
    """Optional fields whose rate of missing values is watched."""


class Contract(_Closed):
    """An event payload. Subclasses set ``contract_name`` / ``contract_version`` and the three hooks."""

    contract_name: ClassVar[str]
    contract_version: ClassVar[str]
    monitoring: ClassVar[Monitoring | None] = None
    """What the monitors watch by default; None: derived from the fields (``core.monitors.default_monitoring``)."""
    compatibility: ClassVar[Compatibility] = "FORWARD"
    """FORWARD by default: consumers built against an older minor can read events of the new one."""

    @classmethod
    def major(cls) -> int:
        """The major version, which names the topic (``<name>.v<major>``)."""
        return int(cls.contract_version.split(".", 1)[0])

    @classmethod
    def event_id_name(cls) -> str:
        """The contract's part of its events' ids: the name for major 1, ``<name>.v<major>`` after that.

        So a v1 event keeps its id whether a connector mapped it natively or it was converted from v2
        during a migration, while the v2 event of the same record gets an id of its own.
        """
        major = cls.major()
        return cls.contract_name if major == 1 else f"{cls.contract_name}.v{major}"

    def entity_key(self) -> str:
        """The Kafka key: the entity whose events must stay ordered (patient, meter, invoice)."""
        raise NotImplementedError

    def subject(self) -> str:
        """The CloudEvents subject: the entity this event is about, as a path."""
        return self.entity_key()

    def occurred_at(self) -> datetime | None:
        """When the fact happened (CloudEvents ``time``), UTC; None if the source does not say."""
        return None


_REGISTRY: dict[tuple[str, str], type[Contract]] = {}


def register(model: type[Contract]) -> type[Contract]:
    """Class decorator: make a contract findable by name and version (CLI, schema checks)."""
    key = (model.contract_name, model.contract_version)
    if key in _REGISTRY and _REGISTRY[key] is not model:
        raise ValueError(f"contract {key[0]} {key[1]} registered twice")
    _REGISTRY[key] = model
    return model


def get_contract(name: str, version: str) -> type[Contract]:
    """The contract model registered as ``name`` ``version``; KeyError names what exists."""
    try:
        return _REGISTRY[(name, version)]
    except KeyError:
        known = ", ".join(f"{n} {v}" for n, v in sorted(_REGISTRY))
        raise KeyError(f"no contract {name} {version}; known: {known}") from None


def all_contracts() -> list[type[Contract]]:
    """Every registered contract, sorted by name and version."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


M = TypeVar("M", bound=BaseModel)
_new = object.__new__
_setattr = object.__setattr__


def checked_instance(cls: type[M], values: dict[str, Any], given: AbstractSet[str]) -> M:
    """An instance of ``cls`` from values already known to pass its validation, without validating them again.

    Only for a hot path that has checked every value exactly as the model would (type, constraint, nested parts
    already instances) and falls back to ``model_validate`` for anything else. ``values`` holds *every* field in
    definition order (defaults filled in), as validation would leave ``__dict__`` (the instance keeps this very
    dict); ``given`` names the fields the input named (validation's ``model_fields_set``: the instance gets a set
    of its own, so a constant frozenset will do). The result equals the validated instance, serialises to the same
    bytes, and stays immutable; tests compare both paths over generated and real inputs.

    This is the reference; a build with the compiled helpers runs the same steps in one C call
    (``core/_speedups.c``, ~4x cheaper: the hot paths make several models per record this way).
    """
    model = _new(cls)
    _setattr(model, "__dict__", values)
    _setattr(model, "__pydantic_fields_set__", set(given))
    _setattr(model, "__pydantic_extra__", None)
    _setattr(model, "__pydantic_private__", None)
    return model


checked_instance_python: Final = checked_instance
try:
    from inlet.core._speedups import checked_instance, model_slots
except ImportError:  # pragma: no cover - a build without the extension
    pass
else:
    model_slots(BaseModel)


C = TypeVar("C", bound=Contract)
D = TypeVar("D", bound=Contract)
_CONVERTERS: dict[type[Contract], dict[type[Contract], Callable[[Contract], Contract]]] = {}


def converter(source: type[C], target: type[D]) -> Callable[[Callable[[C], D]], Callable[[C], D]]:
    """Decorator registering ``fn(source event) -> target event`` for dual publishing across majors.

    While a breaking change rolls out, every event a connector maps to ``source`` is also published as
    ``target`` (a downcaster v2 → v1 keeps old consumers fed; an upcaster v1 → v2 lets a plugin not yet
    ported publish the new major). Deleting the converter retires the old major: nothing else changes.
    """
    if source.contract_name != target.contract_name or source.major() == target.major():
        raise ValueError(
            f"a converter links two majors of one contract, not {source.contract_name} "
            f"{source.contract_version} and {target.contract_name} {target.contract_version}"
        )

    def add(fn: Callable[[C], D]) -> Callable[[C], D]:
        _CONVERTERS.setdefault(source, {})[target] = fn  # type: ignore[assignment]
        return fn

    return add


def converters_from(source: type[Contract]) -> dict[type[Contract], Callable[[Contract], Contract]]:
    """The converters registered for events of ``source`` (empty for most contracts)."""
    return _CONVERTERS.get(source, {})


def published(models: tuple[type[Contract], ...]) -> tuple[type[Contract], ...]:
    """``models`` and, after each, the majors it is dual-published as (its converters' targets), once each:
    what a connector mapping to ``models`` puts on topics while a migration runs."""
    out: dict[type[Contract], None] = {}
    for model in models:
        out[model] = None
        out.update(dict.fromkeys(_CONVERTERS.get(model, {})))
    return tuple(out)


def unregister_converter(source: type[Contract], target: type[Contract]) -> None:
    """Retire a dual-published major (tests and migrations)."""
    _CONVERTERS.get(source, {}).pop(target, None)
