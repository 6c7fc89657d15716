"""inlet — the public API a plugin author builds on. Everything named in ``__all__`` is stable; the rest
(``inlet.core.*``, ``inlet.connectors.*`` internals) may move between releases.

The repository keeps its top-level folders ``core/``, ``connectors/`` and ``contracts/``; this package maps
them into one import namespace (``inlet.core``, ``inlet.connectors``, ``inlet.contracts``) through symlinks
in ``inlet/``, which every tool sees as ordinary directories — see ``docs/reference/packaging.md``.

Names are imported on first use (PEP 562), so ``inlet --version`` and the CLI do not pay for
``fhir.resources`` or paho before they need them; type checkers see them through the
``TYPE_CHECKING`` imports below, which are the source of truth for where each name lives.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inlet.connectors.fhir.bulk import FhirBulkExportConnector, FhirBulkSettings
    from inlet.connectors.fhir.mapping import with_standard_codes
    from inlet.connectors.fhir.search import (
        FhirObservationSearchConnector,
        FhirSearchConnector,
        FhirSearchSettings,
        pinned_settings,
    )
    from inlet.connectors.mqtt_meter.connector import MqttMeterConnector, MqttMeterSettings, Route
    from inlet.contracts import (
        ConditionV1,
        Contract,
        DataQualityV1,
        DeletionV1,
        DeviceStatusV1,
        EncounterV1,
        ErpDeletionV1,
        InvoiceV1,
        MedicationRequestV1,
        MeterReadingV1,
        ObservationV1,
        ObservationV2,
        ObservationV3,
        PartyV1,
        PatientV1,
        PaymentV1,
    )
    from inlet.core.connector import Batch, Connector, IntegrationContext, NoSettings, PluginSettings
    from inlet.core.errors import (
        ConfigError,
        ContractViolation,
        DecodeError,
        InletError,
        MappingError,
        RecordError,
        SinkUnavailable,
        TimestampError,
        TransientError,
        UpstreamError,
    )
    from inlet.core.http import HttpSettings
    from inlet.core.scaffold import Scaffold, not_configured
    from inlet.core.secrets import Secret
    from inlet.core.time import Instant, normalise, normalise_series
    from inlet.core.types import JSONValue, Position, RawRecord

try:
    __version__ = version("inlet")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_WHERE: dict[str, str] = {
    # the connector interface
    "Batch": "inlet.core.connector",
    "Connector": "inlet.core.connector",
    "IntegrationContext": "inlet.core.connector",
    "NoSettings": "inlet.core.connector",
    "PluginSettings": "inlet.core.connector",
    "JSONValue": "inlet.core.types",
    "Position": "inlet.core.types",
    "RawRecord": "inlet.core.types",
    # settings building blocks
    "HttpSettings": "inlet.core.http",
    "Secret": "inlet.core.secrets",
    # scaffolds (`inlet new`): a family declares one; generated hook stubs raise not_configured()
    "Scaffold": "inlet.core.scaffold",
    "not_configured": "inlet.core.scaffold",
    # time
    "Instant": "inlet.core.time",
    "normalise": "inlet.core.time",
    "normalise_series": "inlet.core.time",
    # errors
    **{
        name: "inlet.core.errors"
        for name in (
            "ConfigError",
            "ContractViolation",
            "DecodeError",
            "InletError",
            "MappingError",
            "RecordError",
            "SinkUnavailable",
            "TimestampError",
            "TransientError",
            "UpstreamError",
        )
    },
    # families
    "FhirBulkExportConnector": "inlet.connectors.fhir.bulk",
    "FhirBulkSettings": "inlet.connectors.fhir.bulk",
    "FhirObservationSearchConnector": "inlet.connectors.fhir.search",
    "FhirSearchConnector": "inlet.connectors.fhir.search",
    "FhirSearchSettings": "inlet.connectors.fhir.search",
    "pinned_settings": "inlet.connectors.fhir.search",
    "with_standard_codes": "inlet.connectors.fhir.mapping",
    "MqttMeterConnector": "inlet.connectors.mqtt_meter.connector",
    "MqttMeterSettings": "inlet.connectors.mqtt_meter.connector",
    "Route": "inlet.connectors.mqtt_meter.connector",
    # contracts
    **{
        name: "inlet.contracts"
        for name in (
            "ConditionV1",
            "Contract",
            "DataQualityV1",
            "DeletionV1",
            "DeviceStatusV1",
            "EncounterV1",
            "ErpDeletionV1",
            "InvoiceV1",
            "MedicationRequestV1",
            "MeterReadingV1",
            "ObservationV1",
            "ObservationV2",
            "ObservationV3",
            "PartyV1",
            "PatientV1",
            "PaymentV1",
        )
    },
}

__all__ = [
    "Batch",
    "ConditionV1",
    "ConfigError",
    "Connector",
    "Contract",
    "ContractViolation",
    "DataQualityV1",
    "DecodeError",
    "DeletionV1",
    "DeviceStatusV1",
    "EncounterV1",
    "ErpDeletionV1",
    "FhirBulkExportConnector",
    "FhirBulkSettings",
    "FhirObservationSearchConnector",
    "FhirSearchConnector",
    "FhirSearchSettings",
    "HttpSettings",
    "InletError",
    "Instant",
    "IntegrationContext",
    "InvoiceV1",
    "JSONValue",
    "MappingError",
    "MedicationRequestV1",
    "MeterReadingV1",
    "MqttMeterConnector",
    "MqttMeterSettings",
    "NoSettings",
    "ObservationV1",
    "ObservationV2",
    "ObservationV3",
    "PartyV1",
    "PatientV1",
    "PaymentV1",
    "PluginSettings",
    "Position",
    "RawRecord",
    "RecordError",
    "Route",
    "Scaffold",
    "Secret",
    "SinkUnavailable",
    "TimestampError",
    "TransientError",
    "UpstreamError",
    "__version__",
    "normalise",
    "normalise_series",
    "not_configured",
    "pinned_settings",
    "with_standard_codes",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its home module on first use (and cache it here)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'inlet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
