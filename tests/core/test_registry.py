"""Plugins are found in-tree and through the `inlet.connectors` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from inlet.connectors.customers.example_clinic import ExampleClinicObservations
from inlet.connectors.fhir.search import FhirObservationSearchConnector
from inlet.core.errors import ConfigError
from inlet.core.registry import ENTRY_POINT_GROUP, find_plugin, plugins


def test_in_tree_and_entry_point_plugins_are_both_found() -> None:
    names = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert names["fhir.observation_search"] == "inlet.connectors.fhir.search:FhirObservationSearchConnector"
    found = plugins()
    assert found["fhir.observation_search"] is FhirObservationSearchConnector
    assert found["example_clinic.observations"] is ExampleClinicObservations  # in-tree only, no entry point
    assert "example_clinic.observations" not in names


def test_unknown_plugin_error_lists_what_exists() -> None:
    with pytest.raises(ConfigError, match=r"unknown plugin 'nope' \(known: .*example_clinic\.observations"):
        find_plugin("nope")
