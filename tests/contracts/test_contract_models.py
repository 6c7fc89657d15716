"""The first set of contract models: valid events round-trip through JSON, invalid ones are refused by field.

Every payload here is hand-written, shaped after the public samples (FHIR R4 examples, Business Central v2,
Xero, Tasmota / Shelly telemetry); none of it is copied from them and none of it is about a real person.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from inlet import contracts
from inlet.contracts.base import Contract
from inlet.contracts.erp_invoice import InvoiceLine

PATIENT: dict[str, Any] = {
    "patient_id": "pat-0001",
    "identifiers": [{"system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": "PSEUDO-7f3a"}],
    "active": True,
    "gender": "female",
    "birth_date": "1966-04-01",
    "birth_date_precision": "month",
    "deceased": False,
    "address_country": "NLD",
    "postal_prefix": "102",
    "source_last_updated": "2024-03-01T09:30:00Z",
    "source_version": "3",
}

ENCOUNTER: dict[str, Any] = {
    "encounter_id": "enc-17",
    "patient_id": "pat-0001",
    "status": "finished",
    "encounter_class": {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "code": "IMP",
        "display": "inpatient encounter",
    },
    "type": [{"system": "http://snomed.info/sct", "code": "183807002", "display": "Inpatient stay for nine days"}],
    "period_start": "2013-03-10T23:00:00Z",
    "period_start_precision": "day",
    "period_end": "2013-03-19T23:00:00Z",
    "period_end_precision": "day",
    "service_provider_id": "org-2",
}

CONDITION: dict[str, Any] = {
    "condition_id": "cond-5",
    "patient_id": "pat-0001",
    "encounter_id": "enc-17",
    "clinical_status": "resolved",
    "verification_status": "confirmed",
    "category": ["encounter-diagnosis"],
    "code": [{"system": "http://snomed.info/sct", "code": "386661006", "display": "Fever"}],
    "onset_start": "2013-04-02T00:00:00Z",
    "onset_precision": "day",
    "abated": True,
    "abatement_text": "around April 9, 2013",
    "recorded_date": "2013-04-04T00:00:00Z",
    "recorded_date_precision": "day",
}

MEDICATION_REQUEST: dict[str, Any] = {
    "medication_request_id": "medrx-9",
    "patient_id": "pat-0001",
    "encounter_id": "enc-17",
    "status": "active",
    "intent": "order",
    "medication": [
        {"system": "http://snomed.info/sct", "code": "324252006", "display": "Azithromycin 250mg capsule (product)"}
    ],
    "authored_on": "2015-01-14T23:00:00Z",
    "authored_on_precision": "day",
    "dosage_text": ["Two capsules at once, then one daily"],
    "requester_type": "Practitioner",
    "requester_id": "prac-3",
}

INVOICE: dict[str, Any] = {
    "kind": "sales",
    "invoice_id": "0b1c6d2e-0000-4000-8000-000000000001",
    "invoice_number": "S-INV-100042",
    "party_number": "20000",
    "status": "open",
    "issue_date": "2024-02-29",
    "due_date": "2024-03-30",
    "currency": "EUR",
    "prices_include_tax": False,
    "net_amount": "164.70",
    "tax_amount": "8.24",
    "gross_amount": "172.94",
    "amount_due": "172.94",
    "lines": [
        {
            "line_number": 1,
            "source_line_id": "10000",
            "item_number": "1928-S",
            "description": "Desk lamp",
            "quantity": "3",
            "unit_of_measure": "PCS",
            "unit_price": "54.90",
            "line_amount": "164.70",
            "tax_amount": "8.24",
            "tax_rate": "5",
            "tax_code": "FURNITURE",
        },
    ],
    "last_modified": "2024-02-29T10:15:02.337Z",
    "last_modified_precision": "millisecond",
}

PARTY: dict[str, Any] = {
    "kind": "vendor",
    "party_id": "5f1a0000-0000-4000-8000-000000000002",
    "number": "10000",
    "name": "Example Supplies Ltd.",
    "party_type": "company",
    "tax_id": "GB999999973",
    "country": "GB",
    "currency": "GBP",
    "blocked": True,
    "block_scope": "payment",
    "last_modified": "2024-01-05T07:38:46.53Z",
    "last_modified_precision": "millisecond",
}

PAYMENT: dict[str, Any] = {
    "direction": "received",
    "payment_id": "99aa0000-0000-4000-8000-000000000003",
    "payment_number": "PAY-1234",
    "party_number": "20000",
    "status": "posted",
    "amount": "-46.00",
    "currency": "NZD",
    "paid_at": "2024-03-04T11:00:00Z",
    "paid_at_precision": "day",
    "invoices": [{"invoice_number": "INV-0002", "amount": "-46.00"}],
    "method": "BANK",
}

METER_READING: dict[str, Any] = {
    "device_id": "tasmota-a1b2c3",
    "metric": "energy",
    "quantity": 1290.396,
    "unit": "kWh",
    "direction": "import",
    "phase": "total",
    "kind": "cumulative",
    "counter_started_at": "2023-02-05T10:04:13Z",
    "measured_at": "2023-02-05T19:31:48Z",
    "measured_at_precision": "second",
    "time_source": "device",
    "quality": [],
}

DEVICE_STATUS: dict[str, Any] = {
    "device_id": "shellypro3em-0c8b95",
    "online": False,
    "reason": "lwt",
    "observed_at": "2024-05-01T12:00:03.120Z",
    "observed_at_precision": "millisecond",
    "time_source": "receive",
    "firmware": "1.2.3-beta",
    "model": "SPEM-003CEBEU",
    "signal_dbm": -67,
    "uptime_s": 86400,
}

# contract class, valid payload, expected entity key, subject, occurred_at
CASES: list[tuple[type[Contract], dict[str, Any], str, str, datetime | None]] = [
    (contracts.PatientV1, PATIENT, "pat-0001", "Patient/pat-0001", datetime(2024, 3, 1, 9, 30, tzinfo=UTC)),
    (contracts.EncounterV1, ENCOUNTER, "pat-0001", "Encounter/enc-17", datetime(2013, 3, 10, 23, tzinfo=UTC)),
    (contracts.ConditionV1, CONDITION, "pat-0001", "Condition/cond-5", datetime(2013, 4, 2, tzinfo=UTC)),
    (
        contracts.MedicationRequestV1,
        MEDICATION_REQUEST,
        "pat-0001",
        "MedicationRequest/medrx-9",
        datetime(2015, 1, 14, 23, tzinfo=UTC),
    ),
    (
        contracts.InvoiceV1,
        INVOICE,
        "Invoice/S-INV-100042",
        "Invoice/S-INV-100042",
        datetime(2024, 2, 29, 10, 15, 2, 337000, tzinfo=UTC),
    ),
    (contracts.PartyV1, PARTY, "Vendor/10000", "Vendor/10000", datetime(2024, 1, 5, 7, 38, 46, 530000, tzinfo=UTC)),
    (
        contracts.PaymentV1,
        PAYMENT,
        "Payment/99aa0000-0000-4000-8000-000000000003",
        "Payment/99aa0000-0000-4000-8000-000000000003",
        datetime(2024, 3, 4, 11, tzinfo=UTC),
    ),
    (
        contracts.MeterReadingV1,
        METER_READING,
        "tasmota-a1b2c3",
        "Device/tasmota-a1b2c3/energy",
        datetime(2023, 2, 5, 19, 31, 48, tzinfo=UTC),
    ),
    (
        contracts.DeviceStatusV1,
        DEVICE_STATUS,
        "shellypro3em-0c8b95",
        "Device/shellypro3em-0c8b95",
        datetime(2024, 5, 1, 12, 0, 3, 120000, tzinfo=UTC),
    ),
]
IDS = [c[0].contract_name for c in CASES]


def refused(model: type[Contract], payload: dict[str, Any], field: str) -> str:
    """Validate ``payload`` expecting a refusal whose error location names ``field``; return the message."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(payload)
    locs = [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]
    assert any(field in loc for loc in locs), f"{field} not in {locs}"
    return str(info.value)


def with_(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**payload, **changes}


@pytest.mark.parametrize(("model", "payload", "key", "subject", "when"), CASES, ids=IDS)
def test_valid_event_round_trips_and_knows_its_envelope(
    model: type[Contract], payload: dict[str, Any], key: str, subject: str, when: datetime | None
) -> None:
    event = model.model_validate(payload)
    assert model.model_validate_json(event.model_dump_json()) == event
    assert model.model_validate(json.loads(event.model_dump_json())) == event
    assert contracts.get_contract(model.contract_name, "1.0") is model
    assert model.major() == 1
    assert event.entity_key() == key
    assert event.subject() == subject
    assert event.occurred_at() == when


@pytest.mark.parametrize(("model", "payload"), [(c[0], c[1]) for c in CASES], ids=IDS)
def test_unknown_fields_are_refused_and_events_are_immutable(model: type[Contract], payload: dict[str, Any]) -> None:
    refused(model, with_(payload, surprise=1), "surprise")
    event = model.model_validate(payload)
    first = next(iter(payload))
    with pytest.raises(ValidationError):
        setattr(event, first, payload[first])


# --- clinical ---------------------------------------------------------------------------------------------------


def test_patient_carries_no_address_details_and_a_three_character_postal_prefix() -> None:
    refused(contracts.PatientV1, with_(PATIENT, postal_prefix="1024RJ"), "postal_prefix")
    refused(contracts.PatientV1, with_(PATIENT, address_line="Main St 1"), "address_line")
    refused(contracts.PatientV1, with_(PATIENT, name="Jane Doe"), "name")
    refused(contracts.PatientV1, with_(PATIENT, gender="f"), "gender")
    refused(contracts.PatientV1, with_(PATIENT, identifiers=[{"system": "urn:x", "value": ""}]), "identifiers")
    assert "postal_prefix" in contracts.PatientV1.model_json_schema()["properties"]


def test_patient_birth_date_is_a_calendar_date_with_precision() -> None:
    patient = contracts.PatientV1.model_validate(with_(PATIENT, birth_date="1974-01-01", birth_date_precision="year"))
    assert patient.birth_date == date(1974, 1, 1)
    assert json.loads(patient.model_dump_json())["birth_date"] == "1974-01-01"
    refused(contracts.PatientV1, with_(PATIENT, birth_date_precision="minute"), "birth_date_precision")


def test_patient_death_time_implies_deceased() -> None:
    dead = contracts.PatientV1.model_validate(
        with_(PATIENT, deceased=True, deceased_at="2015-02-14T03:42:00Z", deceased_precision="minute")
    )
    assert dead.deceased_at == datetime(2015, 2, 14, 3, 42, tzinfo=UTC)
    with pytest.raises(ValidationError, match="deceased must be true"):
        contracts.PatientV1.model_validate(with_(PATIENT, deceased=False, deceased_at="2015-02-14T03:42:00Z"))


def test_patient_without_an_update_time_has_no_occurrence() -> None:
    assert contracts.PatientV1(patient_id="p").occurred_at() is None


def test_encounter_needs_a_class_and_a_known_status_and_keys_on_itself_without_a_patient() -> None:
    refused(contracts.EncounterV1, {k: v for k, v in ENCOUNTER.items() if k != "encounter_class"}, "encounter_class")
    refused(contracts.EncounterV1, with_(ENCOUNTER, status="done"), "status")
    refused(contracts.EncounterV1, with_(ENCOUNTER, period_start_precision="week"), "period_start_precision")
    orphan = contracts.EncounterV1.model_validate(with_(ENCOUNTER, patient_id=None))
    assert orphan.entity_key() == "Encounter/enc-17"


def test_condition_statuses_are_fhir_codes_and_onset_falls_back_to_recorded_date() -> None:
    refused(contracts.ConditionV1, with_(CONDITION, clinical_status="Active"), "clinical_status")
    refused(contracts.ConditionV1, with_(CONDITION, verification_status="maybe"), "verification_status")
    refused(contracts.ConditionV1, with_(CONDITION, onset_age_years=-1), "onset_age_years")
    refused(contracts.ConditionV1, {k: v for k, v in CONDITION.items() if k != "patient_id"}, "patient_id")
    text_only = contracts.ConditionV1.model_validate(
        with_(CONDITION, code=[], code_text="Asthma", onset_start=None, onset_precision=None, onset_text="2012")
    )
    assert text_only.occurred_at() == datetime(2013, 4, 4, tzinfo=UTC)


def test_medication_request_status_intent_and_requester_are_closed_sets() -> None:
    refused(contracts.MedicationRequestV1, with_(MEDICATION_REQUEST, status="ordered"), "status")
    refused(contracts.MedicationRequestV1, with_(MEDICATION_REQUEST, intent="prescription"), "intent")
    refused(contracts.MedicationRequestV1, with_(MEDICATION_REQUEST, requester_type="Doctor"), "requester_type")
    refused(contracts.MedicationRequestV1, with_(MEDICATION_REQUEST, dosage_text="once"), "dosage_text")


# --- ERP: money is exact ----------------------------------------------------------------------------------------


def test_money_given_as_a_float_or_int_is_refused() -> None:
    message = refused(contracts.InvoiceV1, with_(INVOICE, net_amount=164.7), "net_amount")
    assert "never a number" in message
    refused(contracts.InvoiceV1, with_(INVOICE, gross_amount=172), "gross_amount")
    refused(contracts.PaymentV1, with_(PAYMENT, amount=46.0), "amount")
    line = {**INVOICE["lines"][0], "quantity": 3.0}
    refused(contracts.InvoiceV1, with_(INVOICE, lines=[line]), "lines.0.quantity")
    # JSON numbers are refused just the same
    body = json.dumps(with_(INVOICE, tax_amount=8.24))
    with pytest.raises(ValidationError, match="tax_amount"):
        contracts.InvoiceV1.model_validate_json(body)


@pytest.mark.parametrize("bad", ["1e3", "1,000.00", "12.", ".5", "+1", " 1", "NaN", "١٢", ""])
def test_money_strings_must_be_plain_decimals(bad: str) -> None:
    refused(contracts.InvoiceV1, with_(INVOICE, net_amount=bad), "net_amount")


def test_money_given_as_decimal_becomes_a_string_keeping_its_scale() -> None:
    invoice = contracts.InvoiceV1.model_validate(
        with_(INVOICE, net_amount=Decimal("164.70"), tax_amount=Decimal("1E+1"), gross_amount=Decimal("-0.001"))
    )
    assert (invoice.net_amount, invoice.tax_amount, invoice.gross_amount) == ("164.70", "10", "-0.001")
    refused(contracts.InvoiceV1, with_(INVOICE, net_amount=Decimal("NaN")), "net_amount")
    dumped = json.loads(invoice.model_dump_json())
    assert dumped["net_amount"] == "164.70"
    assert isinstance(dumped["lines"][0]["unit_price"], str)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**12), max_value=10**12))
def test_any_finite_decimal_survives_exactly(value: Decimal) -> None:
    line = InvoiceLine(line_number=1, quantity=value, unit_price=value, line_amount=value)
    assert Decimal(line.quantity) == value
    assert InvoiceLine.model_validate_json(line.model_dump_json()) == line


def test_money_is_a_string_in_the_json_schema() -> None:
    schema = contracts.InvoiceV1.model_json_schema(mode="serialization")
    for field in ("net_amount", "tax_amount", "gross_amount"):
        assert schema["properties"][field]["type"] == "string"
        assert schema["properties"][field]["pattern"] == r"^-?[0-9]+(\.[0-9]+)?$"
    line = schema["$defs"]["InvoiceLine"]["properties"]
    assert line["quantity"]["type"] == "string"
    assert line["unit_price"]["type"] == "string"
    assert schema["properties"]["currency"]["pattern"] == "^[A-Z]{3}$"
    assert schema["properties"]["issue_date"]["format"] == "date"
    payment = contracts.PaymentV1.model_json_schema(mode="serialization")
    assert payment["properties"]["amount"]["type"] == "string"


@pytest.mark.parametrize("currency", ["eur", "EURO", "EU", "€", ""])
def test_currency_must_be_an_iso_4217_code(currency: str) -> None:
    refused(contracts.InvoiceV1, with_(INVOICE, currency=currency), "currency")
    refused(contracts.PaymentV1, with_(PAYMENT, currency=currency), "currency")
    refused(contracts.PartyV1, with_(PARTY, currency=currency), "currency")


def test_invoice_dates_are_dates_and_lines_are_checked() -> None:
    invoice = contracts.InvoiceV1.model_validate(INVOICE)
    assert invoice.issue_date == date(2024, 2, 29)
    assert json.loads(invoice.model_dump_json())["due_date"] == "2024-03-30"
    refused(contracts.InvoiceV1, with_(INVOICE, issue_date="2024-02-30"), "issue_date")
    refused(contracts.InvoiceV1, with_(INVOICE, issue_date="2024-02-29T10:00:00+01:00"), "issue_date")
    refused(contracts.InvoiceV1, with_(INVOICE, status="Paid"), "status")
    refused(
        contracts.InvoiceV1, with_(INVOICE, lines=[{**INVOICE["lines"][0], "line_number": 0}]), "lines.0.line_number"
    )
    refused(contracts.InvoiceV1, with_(INVOICE, lines=[{**INVOICE["lines"][0], "colour": "red"}]), "lines.0.colour")


def test_purchase_invoices_and_customers_key_apart_from_sales_invoices_and_vendors() -> None:
    purchase = contracts.InvoiceV1.model_validate(with_(INVOICE, kind="purchase"))
    assert purchase.entity_key() == purchase.subject() == "PurchaseInvoice/S-INV-100042"
    customer = contracts.PartyV1.model_validate(with_(PARTY, kind="customer"))
    assert customer.entity_key() == "Customer/10000" != contracts.PartyV1.model_validate(PARTY).entity_key()


def test_party_country_is_alpha_2_and_kind_is_closed() -> None:
    refused(contracts.PartyV1, with_(PARTY, country="USA"), "country")
    refused(contracts.PartyV1, with_(PARTY, country="us"), "country")
    refused(contracts.PartyV1, with_(PARTY, kind="supplier"), "kind")
    refused(contracts.PartyV1, with_(PARTY, email="someone@example.com"), "email")
    refused(contracts.PartyV1, with_(PARTY, block_scope="everything"), "block_scope")


def test_payment_allocations_are_exact_too() -> None:
    refused(
        contracts.PaymentV1, with_(PAYMENT, invoices=[{"invoice_number": "INV-1", "amount": 1.5}]), "invoices.0.amount"
    )
    refused(contracts.PaymentV1, with_(PAYMENT, invoices=[{"invoice_number": ""}]), "invoices.0.invoice_number")
    refused(contracts.PaymentV1, with_(PAYMENT, direction="in"), "direction")
    refused(contracts.PaymentV1, {k: v for k, v in PAYMENT.items() if k != "paid_at"}, "paid_at")


# --- energy -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["kwh", "Wm", "VA", "°C", "MWh", "var"])
def test_meter_units_outside_the_closed_set_are_refused(unit: str) -> None:
    refused(contracts.MeterReadingV1, with_(METER_READING, unit=unit), "unit")


def test_meter_reading_field_rules() -> None:
    refused(contracts.MeterReadingV1, with_(METER_READING, direction="in"), "direction")
    refused(contracts.MeterReadingV1, with_(METER_READING, phase="L4"), "phase")
    refused(contracts.MeterReadingV1, with_(METER_READING, time_source="server"), "time_source")
    refused(contracts.MeterReadingV1, with_(METER_READING, quality=["bad"]), "quality")
    refused(contracts.MeterReadingV1, with_(METER_READING, quantity=float("nan")), "quantity")
    refused(contracts.MeterReadingV1, with_(METER_READING, quantity="lots"), "quantity")
    refused(contracts.MeterReadingV1, with_(METER_READING, metric="Total Energy"), "metric")
    refused(contracts.MeterReadingV1, {k: v for k, v in METER_READING.items() if k != "time_source"}, "time_source")


def test_meter_reading_kinds_are_consistent() -> None:
    with pytest.raises(ValidationError, match="direction"):
        contracts.MeterReadingV1.model_validate(with_(METER_READING, direction=None))
    with pytest.raises(ValidationError, match="cumulative"):
        contracts.MeterReadingV1.model_validate(with_(METER_READING, unit="W"))
    interval = with_(METER_READING, kind="interval", metric="energy_today", quantity=0.173)
    with pytest.raises(ValidationError, match="interval_start"):
        contracts.MeterReadingV1.model_validate(interval)
    with pytest.raises(ValidationError, match="before measured_at"):
        contracts.MeterReadingV1.model_validate(with_(interval, interval_start="2023-02-05T19:31:48Z"))
    with pytest.raises(ValidationError, match="UTC"):
        contracts.MeterReadingV1.model_validate(with_(interval, interval_start="2023-02-05T00:00:00"))
    ok = contracts.MeterReadingV1.model_validate(with_(interval, interval_start="2023-02-04T23:00:00Z"))
    assert ok.interval_start == datetime(2023, 2, 4, 23, tzinfo=UTC)
    with pytest.raises(ValidationError, match="only for interval"):
        contracts.MeterReadingV1.model_validate(with_(METER_READING, interval_start="2023-02-04T23:00:00Z"))


def test_voltage_has_no_direction_and_a_device_without_clock_says_receive() -> None:
    voltage = contracts.MeterReadingV1.model_validate(
        with_(
            METER_READING,
            metric="voltage",
            quantity=237,
            unit="V",
            direction=None,
            phase="L1",
            kind="instantaneous",
            counter_started_at=None,
            time_source="receive",
            quality=["clock_suspect"],
        )
    )
    assert voltage.subject() == "Device/tasmota-a1b2c3/voltage"
    assert (
        voltage.entity_key()
        == contracts.DeviceStatusV1.model_validate(with_(DEVICE_STATUS, device_id="tasmota-a1b2c3")).entity_key()
    )
    reset = contracts.MeterReadingV1.model_validate(with_(METER_READING, quantity=0.0, quality=["counter_reset"]))
    assert reset.quality == ["counter_reset"]


def test_device_status_field_rules() -> None:
    refused(contracts.DeviceStatusV1, with_(DEVICE_STATUS, online="maybe"), "online")
    refused(contracts.DeviceStatusV1, with_(DEVICE_STATUS, signal_dbm=80), "signal_dbm")
    refused(contracts.DeviceStatusV1, with_(DEVICE_STATUS, reason="gone"), "reason")
    refused(contracts.DeviceStatusV1, with_(DEVICE_STATUS, uptime_s=-1), "uptime_s")
    minimal = contracts.DeviceStatusV1(
        device_id="d1", online=True, observed_at=datetime(2024, 1, 1, tzinfo=UTC), time_source="device"
    )
    assert (minimal.firmware, minimal.signal_dbm) == (None, None)
