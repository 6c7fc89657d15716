"""Types of inlet's compiled hot-path helpers (core/_speedups.c): core.time's front, core.exact_json's scan, murmur2,
the envelope, the dump of event values and checked model instances."""

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from datetime import tzinfo
from typing import Any, TypeVar

from pydantic import BaseModel

_M = TypeVar("_M", bound=BaseModel)

def install(
    fallback: Callable[..., object],
    cache: dict[str, Any],
    instant_type: type[tuple[object, ...]],
    utc: tzinfo,
    cache_max: int,
    precisions: tuple[str, str, str, str],
) -> None: ...
def normalise(value: object, zone: str | None = None, **options: object) -> object: ...
def needs_exact(data: bytes | bytearray | memoryview) -> bool: ...
def murmur2(data: bytes | bytearray | memoryview) -> int: ...
def envelope(
    event_type: type[Any],
    info: tuple[str, str, tuple[str, bytes], tuple[str, bytes], tuple[str, bytes]],
    common: list[tuple[str, bytes]],
    namespace: Any,
    source_key: str,
    source_version: str,
    ordinal: int,
    subject: str,
    key: str,
    value: bytes,
    when: object,
) -> Any: ...
def dump(model: object, specs: dict[type, Any]) -> bytes | None: ...
def checked_instance(cls: type[_M], values: dict[str, Any], given: AbstractSet[str]) -> _M: ...
def model_slots(base: type[BaseModel]) -> None: ...
