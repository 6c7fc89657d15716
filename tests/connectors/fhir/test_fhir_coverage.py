"""Mapping coverage on the shared FHIR data: every Patient, Observation, Encounter, Condition and
MedicationRequest either maps to a valid event, lands in the DLQ with a reason (MappingError or the contract's
ValidationError) or is filtered by the family's stated rule (``filter_reason``: entered-in-error). Anything else
is unaccounted and fails the test, as does a type with resources but no mapped event.

Read in place from ``../shared/data`` (never copied): the HL7 R4 examples (one resource per file, plus the
resources inside the example Bundles, nested ones included, resolved against their own bundle), all six
Synthea transaction bundles (about 1,350 resources: no sampling needed) and the Bulk NDJSON files of the
mapped types. The zone is Europe/Amsterdam: the HL7 examples carry partial dates, which start a day in the
connection's zone; Synthea and Bulk values carry their own offsets. Files are parsed as the connectors parse
pages and NDJSON lines (``core.exact_json``), so FHIR decimals reach the mappers exactly as written.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from inlet.connectors.fhir.mapping import BundleIndex, Resource, bundle_index
from inlet.connectors.fhir.resources import MAPPERS, filter_reason, map_resource
from inlet.contracts.base import Contract
from inlet.core import exact_json
from inlet.core.errors import MappingError

ZONE = "Europe/Amsterdam"
SOURCES = ("hl7", "synthea", "bulk")


@dataclass
class Tally:
    """What became of the resources of one type from one source."""

    mapped: int = 0
    dlq: Counter[str] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    unaccounted: list[str] = field(default_factory=list)

    def total(self) -> int:
        return self.mapped + self.dlq.total() + self.filtered.total() + len(self.unaccounted)


def _in_bundle(bundle: Resource) -> Iterator[tuple[Resource, BundleIndex]]:
    index = bundle_index(bundle)
    for entry in bundle.get("entry") or ():
        res = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(res, dict) and res.get("resourceType") == "Bundle":
            yield from _in_bundle(res)
        elif isinstance(res, dict) and res.get("resourceType") in MAPPERS:
            yield res, index


def _resources(fhir: Path) -> Iterator[tuple[str, str, Resource, BundleIndex | None]]:
    """(source, bundle file or "", resource, its bundle's index) for every resource of a mapped type."""
    for path in sorted((fhir / "hl7-r4-official-examples").glob("*.json")):
        doc = exact_json.loads(path.read_bytes())
        if doc.get("resourceType") == "Bundle":
            yield from (("hl7", path.name, res, index) for res, index in _in_bundle(doc))
        elif doc.get("resourceType") in MAPPERS:
            yield "hl7", "", doc, None
    for path in sorted((fhir / "smart-generated-sample-data-R4-SYNTHEA").glob("*.json")):
        yield from (
            ("synthea", path.name, res, index) for res, index in _in_bundle(exact_json.loads(path.read_bytes()))
        )
    for rtype in MAPPERS:
        for path in sorted(fhir.glob(f"bulk-ndjson/*/{rtype}.*.ndjson")):
            with path.open("rb") as lines:  # streamed line by line, as the Bulk connector will
                yield from (("bulk", "", exact_json.loads(line), None) for line in lines if line.strip())


def _reason(exc: Exception) -> str:
    """A DLQ reason that groups alike records: the resource's id and quoted values left out."""
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        text = f"{exc.title} {'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    else:
        text = re.sub(r"^\w+/[^.: ]*(: )?", "", str(exc))
    return re.sub(r"'[^']*'", "'…'", text)[:110]


def _map(res: Resource, index: BundleIndex | None, tally: Tally) -> Contract | None:
    if reason := filter_reason(res):
        tally.filtered[reason] += 1
        return None
    try:
        ev = map_resource(res, ZONE, index=index)
        type(ev).model_validate_json(ev.model_dump_json())  # the event survives its own serialisation
    except (MappingError, ValidationError) as exc:
        tally.dlq[_reason(exc)] += 1
        return None
    except Exception as exc:  # the point: anything else is unaccounted, reported below
        tally.unaccounted.append(f"{res.get('resourceType')}/{res.get('id')}: {type(exc).__name__}: {exc}")
        return None
    tally.mapped += 1
    return ev


def _table(tallies: dict[tuple[str, str], Tally]) -> str:
    lines = [f"{'type':<18}{'source':<9}{'mapped':>7}{'dlq':>6}{'filtered':>9}{'unacc.':>7}"]
    for rtype in MAPPERS:
        for source in SOURCES:
            if (t := tallies.get((rtype, source))) and t.total():
                lines.append(
                    f"{rtype:<18}{source:<9}{t.mapped:>7}{t.dlq.total():>6}{t.filtered.total():>9}"
                    f"{len(t.unaccounted):>7}"
                )
        dlq = sum((t.dlq for (r, _), t in tallies.items() if r == rtype), Counter[str]())
        filtered = sum((t.filtered for (r, _), t in tallies.items() if r == rtype), Counter[str]())
        lines += [f"    dlq {n:>4} x {reason}" for reason, n in dlq.most_common(4)]
        lines += [f"    filtered {n:>4} x {reason}" for reason, n in filtered.most_common()]
    return "\n".join(lines)


def test_every_resource_maps_goes_to_the_dlq_or_is_filtered(
    sample_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tallies: dict[tuple[str, str], Tally] = {}
    bundle_patients: dict[str, set[str]] = {}
    synthea_events: list[tuple[str, Contract]] = []
    for source, bundle, res, index in _resources(sample_data / "fhir"):
        tally = tallies.setdefault((res["resourceType"], source), Tally())
        ev = _map(res, index, tally)
        if source == "synthea":
            if res["resourceType"] == "Patient":
                bundle_patients.setdefault(bundle, set()).add(res["id"])
            elif ev is not None:
                synthea_events.append((bundle, ev))
    with capsys.disabled():
        print(f"\nFHIR mapping coverage (zone {ZONE}):\n{_table(tallies)}")

    unaccounted = [u for t in tallies.values() for u in t.unaccounted]
    assert not unaccounted, "records neither mapped, nor DLQ, nor filtered:\n" + "\n".join(unaccounted[:20])
    for rtype in MAPPERS:
        per_type = [t for (r, _), t in tallies.items() if r == rtype]
        assert sum(t.total() for t in per_type) > 0, f"no {rtype} found in the sample data: is the data there?"
        assert sum(t.mapped for t in per_type) > 0, f"no {rtype} mapped at all"
        for source in ("hl7", "synthea"):
            assert (rtype, source) in tallies, f"the {source} data has {rtype} resources, none were read"
    # Generated data is well formed: a DLQ record there is a mapper regression, not bad input.
    for source in ("synthea", "bulk"):
        dlq = sum((t.dlq for (_, s), t in tallies.items() if s == source), Counter[str]())
        assert not dlq, f"{source} resources in the DLQ: {dlq.most_common(5)}"
    # Synthea refers by urn:uuid fullUrls: resolved within the bundle, every event's patient is that bundle's.
    assert synthea_events
    for bundle, ev in synthea_events:
        assert getattr(ev, "patient_id", None) in bundle_patients[bundle], (bundle, ev)
        if ev.contract_name == "clinical.medication_request":
            assert getattr(ev, "requester_type", None) == "Practitioner", ev


def test_the_spec_reference_bundle_resolves(sample_data: Path) -> None:
    """Bundle-bundle-references, the R4 example of how references in a bundle resolve."""
    bundle = orjson.loads((sample_data / "fhir/hl7-r4-official-examples/Bundle-bundle-references.json").read_bytes())
    index = bundle_index(bundle)
    got: dict[str, Any] = {}
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Observation":
            got[entry["fullUrl"]] = map_resource(entry["resource"], ZONE, index=index).patient_id  # type: ignore[attr-defined]
    assert got == {
        "http://example.org/fhir/Observation/123": "23",  # relative Patient/23
        "http://example.org/fhir/Observation/124": "23",  # absolute, = an entry's fullUrl
        # urn:uuid of an entry without an id (a Patient to be created): the uuid stands for it
        "http://example.org/fhir/Observation/12": "04121321-4af5-424c-a0e1-ed3aab1c349d",
        "http://example.org/fhir/Observation/14": "1",  # another server's patient, not in the bundle
        "http://example.org/fhir-2/Observation/14": "23",
        "http://example.org/fhir/Observation/47": "45",  # versioned reference
        "http://example.org/fhir/Observation/48": None,  # logical reference (identifier only)
    }
