"""Versioned event contracts. Importing this package registers every contract model."""

from __future__ import annotations

from inlet.contracts.base import Contract, all_contracts, get_contract, register
from inlet.contracts.clinical_condition import ConditionV1
from inlet.contracts.clinical_deletion import DeletionV1
from inlet.contracts.clinical_encounter import EncounterV1
from inlet.contracts.clinical_medication_request import MedicationRequestV1
from inlet.contracts.clinical_observation import ObservationV1
from inlet.contracts.clinical_observation_v2 import ObservationV2
from inlet.contracts.clinical_observation_v3 import ObservationV3
from inlet.contracts.clinical_patient import PatientV1
from inlet.contracts.clinical_patient_merge import PatientMergeV1
from inlet.contracts.energy_data_quality import DataQualityV1
from inlet.contracts.energy_device_status import DeviceStatusV1
from inlet.contracts.energy_meter_reading import MeterReadingV1
from inlet.contracts.erp_deletion import ErpDeletionV1
from inlet.contracts.erp_invoice import InvoiceV1
from inlet.contracts.erp_party import PartyV1
from inlet.contracts.erp_payment import PaymentV1
from inlet.contracts.inlet_data_alert import DataAlertV1

__all__ = [
    "ConditionV1",
    "Contract",
    "DataAlertV1",
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
    "PatientMergeV1",
    "PatientV1",
    "PaymentV1",
    "all_contracts",
    "get_contract",
    "register",
]
