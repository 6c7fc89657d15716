"""Versioned event contracts. Importing this package registers every contract model."""

from __future__ import annotations

from contracts.base import Contract, all_contracts, get_contract, register
from contracts.clinical_observation import ObservationV1

__all__ = ["Contract", "ObservationV1", "all_contracts", "get_contract", "register"]
