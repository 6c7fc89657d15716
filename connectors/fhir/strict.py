"""How far incoming FHIR resources are validated, and the opt-in full check.

The decision: **by default, a resource is validated only as far as its mapping needs it** — the
mapper checks the shape of every element it reads (a ``MappingError`` naming the element path) and the
contract validates the event it produces. Elements the family does not read are not checked: a server
adding a vendor extension or a field we ignore must not stop the feed. This keeps the hot path at
~15 µs per resource.

``strict: true`` on an integration additionally validates every resource against the full FHIR R4B model of
``fhir.resources`` (types, regexes of primitives, cardinality, unknown elements) before mapping. It costs
~600 µs per resource here (40x the mapping), so it is meant for onboarding a new hospital, for replaying
fixtures in CI, or for feeds where a structurally broken resource must never become an event; a resource
that fails goes to the DLQ (stage decode) with the first problems and their element paths.

Note what even strict mode does not check: ``fhir.resources`` 8 does not enforce required value sets
(an Observation ``status`` of ``"nonsense"`` passes); the contracts' closed literals do that for what is
mapped.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

from inlet.core.errors import DecodeError

__all__ = ["validate_strict"]

_MAX_SHOWN = 3


@cache
def _model(resource_type: str) -> type[BaseModel] | None:
    from fhir.resources.R4B import get_fhir_model_class  # imported on first use: ~1 s, strict mode only

    try:
        model: type[BaseModel] = get_fhir_model_class(resource_type)
    except (ValueError, KeyError):
        return None
    return model


def validate_strict(resource: dict[str, Any]) -> None:
    """Validate against the full R4B model; DecodeError naming the resource and the first failing paths."""
    rtype = resource.get("resourceType")
    where = f"{rtype}/{resource.get('id')}"
    model = _model(rtype) if isinstance(rtype, str) else None
    if model is None:
        raise DecodeError(f"{where}: strict validation: {rtype!r} is not a FHIR R4 resource type", source_key=where)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors()
        shown = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:_MAX_SHOWN])
        more = f" (and {len(errors) - _MAX_SHOWN} more)" if len(errors) > _MAX_SHOWN else ""
        raise DecodeError(f"{where}: not valid FHIR R4: {shown}{more}", source_key=where) from None
