"""The base of every event contract, and the registry of contracts by name and version.

A contract is a pydantic model per name and major version with a ``MAJOR.MINOR`` version. The
model itself knows what the envelope needs from it (the entity key, the subject, when it happened),
so the pipeline never has to know a contract's fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = ["Contract", "all_contracts", "get_contract", "register"]


class Contract(BaseModel):
    """An event payload. Subclasses set ``contract_name`` / ``contract_version`` and the three hooks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contract_name: ClassVar[str]
    contract_version: ClassVar[str]

    @classmethod
    def major(cls) -> int:
        """The major version, which names the topic (``<name>.v<major>``)."""
        return int(cls.contract_version.split(".", 1)[0])

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
