"""The error hierarchy tells the truth: the drawn tree is the real one, every error is in it, and the deciding code
reads the class attributes, so a new subclass with the right ones is enough."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import pkgutil
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

import inlet.core.errors as errors
from inlet.contracts.base import Contract
from inlet.core.config import load_config
from inlet.core.connector import Batch, Connector, NoSettings
from inlet.core.envelope import Enveloper
from inlet.core.errors import (
    ContractViolation,
    InletError,
    LeftOut,
    RecordError,
    SinkRefused,
    Stage,
    TransientError,
)
from inlet.core.pipeline import process_batch
from inlet.core.supervisor import Supervisor
from inlet.core.types import Position
from tests.helpers import ListConnector, write_config

_LINE = re.compile(r"^(?P<indent>(?:│   |    )*)(?P<branch>[├└]── )?(?P<name>[\w.]+)(?:\s{2,}(?P<text>.*))?$")


def _drawn() -> dict[str, tuple[str, ...]]:
    """The tree in the errors module docstring: each class name with its parents (the one it is drawn under,
    then any second base its line names with "also a X")."""
    doc = errors.__doc__ or ""
    lines = doc.splitlines()
    start = lines.index("    InletError                      root; never raised itself")
    tree: dict[str, tuple[str, ...]] = {}
    path: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            break
        found = _LINE.match(line.removeprefix("    "))
        assert found, f"not a line of the tree: {line!r}"
        depth = len(found["indent"]) // 4 + (1 if found["branch"] else 0)
        name = found["name"]
        also = re.match(r"also an? (\w+)", found["text"] or "")
        del path[depth:]
        tree[name] = (*path[-1:], *([also[1]] if also else []))
        path.append(name)
    return tree


def _modules(package: str) -> Iterator[Any]:
    root = importlib.import_module(package)
    yield root
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        yield importlib.import_module(info.name)


def _defined_exceptions(package: str) -> list[type[BaseException]]:
    """Every exception class defined (not just imported) in a module of ``package``."""
    return [
        obj
        for module in _modules(package)
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__
    ]


def _drawn_name(cls: type[BaseException]) -> str:
    """How the tree names a class: bare in core.errors, ``module._Name`` for a local signal of another module."""
    if cls.__module__ == errors.__name__:
        return cls.__name__
    return f"{cls.__module__.removeprefix('inlet.core.')}.{cls.__name__}"


def test_the_drawn_tree_is_the_class_hierarchy_of_every_core_error() -> None:
    classes = [c for c in _defined_exceptions("inlet.core") if c.__module__ == errors.__name__ or c.__name__[0] == "_"]
    actual = {_drawn_name(c): tuple(_drawn_name(b) for b in c.__bases__ if b is not Exception) for c in classes}
    assert _drawn() == actual


def test_every_exception_of_inlet_is_an_inlet_error() -> None:
    outside = [
        f"{c.__module__}.{c.__qualname__}"
        for package in ("inlet.core", "inlet.connectors", "inlet.contracts")
        for c in _defined_exceptions(package)
        if issubclass(c, Exception) and not issubclass(c, InletError)
    ]
    assert outside == []


def test_public_core_errors_are_defined_in_core_errors_only() -> None:
    elsewhere = [
        f"{c.__module__}.{c.__qualname__}"
        for c in _defined_exceptions("inlet.core")
        if c.__module__ != errors.__name__ and not c.__name__.startswith("_")
    ]
    assert elsewhere == []


def test_the_old_import_paths_still_name_the_same_classes() -> None:
    from inlet.connectors.mqtt_meter.decoders._common import Skip
    from inlet.core import auth, http, pagination, pipeline, recording, relay, topics

    assert (http.UpstreamRefused, http.UnexpectedContent, auth.AuthError) == (
        errors.UpstreamRefused,
        errors.UnexpectedContent,
        errors.AuthError,
    )
    assert (pagination.PaginationLoopError, pagination.PageDecodeError) == (
        errors.PaginationLoopError,
        errors.PageDecodeError,
    )
    assert (relay.RelayRefused, recording.ReplayMiss, topics.TopicsMissing, pipeline.UpstreamDrift) == (
        errors.RelayRefused,
        errors.ReplayMiss,
        errors.TopicsMissing,
        errors.UpstreamDrift,
    )
    assert Skip is LeftOut


# --- the deciding code reads the attributes ---------------------------------------------------------------------


class _Outage(InletError):
    """Not a TransientError: retriable by its attribute alone."""

    retriable: ClassVar[bool] = True


class _Garbled(RecordError):
    stage: ClassVar[Stage] = "decode"


class _Raising(ListConnector):
    """map() raises what the record names."""

    def map(self, record: dict[str, Any]) -> Sequence[Contract]:
        if "raise" in record:
            raise record["raise"]
        return super().map(record)


def _dlq_headers(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    events, counts = process_batch(_Raising([]), Enveloper("acme", "obs"), Batch(records, {"batch": 0}))
    assert counts.balanced()
    return [{k: v.decode() for k, v in e.headers} for e in events if e.topic == "inlet.dlq.acme.obs"]


def test_a_retriable_error_stops_the_batch_whatever_its_base() -> None:
    with pytest.raises(_Outage):
        _dlq_headers([{"id": "o1", "raise": _Outage("upstream away")}])


def test_a_record_error_reaches_the_dlq_at_the_stage_its_class_names() -> None:
    [dead] = _dlq_headers([{"id": "o1", "raise": _Garbled("half a payload")}])
    assert (dead["dlq_stage"], dead["dlq_error_type"], dead["dlq_source_key"]) == (
        "decode",
        "_Garbled",
        "Observation/o1",
    )


def test_a_contract_violation_is_a_dlq_record_at_stage_validate() -> None:
    raised, refused = _dlq_headers(
        [{"id": "o1", "raise": ContractViolation("effective_end is before effective_start")}, {"id": ""}]
    )
    assert (raised["dlq_stage"], raised["dlq_error_type"]) == ("validate", "ContractViolation")
    assert raised["dlq_error_message"] == "effective_end is before effective_start"
    # pydantic refusing the model map() built is one too; its DLQ record keeps the error type it always had.
    assert (refused["dlq_stage"], refused["dlq_error_type"]) == ("validate", "ValidationError")
    assert refused["dlq_error_message"].startswith("ObservationV1 does not satisfy its contract: observation_id: ")


def test_a_record_left_out_while_mapping_is_counted_as_filtered() -> None:
    events, counts = process_batch(
        _Raising([]), Enveloper("acme", "obs"), Batch([{"id": "o1", "raise": LeftOut("a status message")}], {})
    )
    assert events == [] and dict(counts.filtered) == {"a status message": 1} and counts.balanced()


def _doomed(error: Exception) -> type[Connector[NoSettings]]:
    """A connector that reads nothing but ``error``."""

    class Doomed(Connector[NoSettings]):
        async def read(self, position: Position | None) -> AsyncIterator[Batch]:
            raise error
            yield  # pragma: no cover

        def identity(self, record: Any) -> tuple[str, str]:
            raise NotImplementedError

        def map(self, record: Any) -> Sequence[Contract]:
            raise NotImplementedError

    return Doomed


class _Forbidden(InletError):
    fatal: ClassVar[bool] = True


@pytest.mark.parametrize("error", [SinkRefused("wrong password"), _Forbidden("licence revoked")])
async def test_the_supervisor_stops_a_fatal_error_for_good_instead_of_restarting(
    tmp_path: Path, error: Exception
) -> None:
    sup_cfg, [item] = load_config(write_config(tmp_path, base_url="http://127.0.0.1:9/fhir"))
    supervisor = Supervisor(sup_cfg, [dataclasses.replace(item, plugin=_doomed(error), settings=NoSettings())])
    stats = await asyncio.wait_for(supervisor.run(), 10)
    assert supervisor.failed == {"acme/observations": f"{type(error).__name__}: {error}"}
    assert stats["acme/observations"].restarts == 0


def test_transient_errors_are_retriable_and_refusals_fatal() -> None:
    assert TransientError.retriable and not TransientError.fatal
    assert SinkRefused.fatal and not SinkRefused.retriable
    assert errors.RelayRefused.fatal and not errors.RelayRefused.retriable  # also a RelayError, which is retriable
    assert errors.RelayError.retriable and not errors.RelayFailed.retriable
