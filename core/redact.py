"""Redaction of recorded HTTP exchanges: secrets always, PHI (pseudonymised) for healthcare feeds.

:class:`Redactor` is the ``redact=`` hook of :class:`core.recording.RecordingTransport`: it takes one exchange
document (``{"request": "GET /path?sorted-query", "response": {"status", "content_type", "json" | "text",
"retry_after"?}}``) and returns a redacted copy. The input is never mutated.

Secrets (always)
    * every value :func:`core.secrets.known_secrets` knows, anywhere (request line, text bodies, JSON strings
      and member names) becomes ``***``;
    * JSON members whose name is a credential name (below) get the value ``"***"`` (``null`` stays ``null``);
    * query parameters with a credential name, in the request line and in URLs inside bodies, become ``***``;
    * in any string: ``Bearer <token>`` / ``Basic <token>`` and ``name=value`` / ``name: value`` /
      ``"name": "value"`` with a credential name (form-encoded token responses, error messages echoing headers).

    Credential names (:data:`CREDENTIAL_NAMES`), compared case-insensitively with ``-`` and ``_`` ignored
    (so ``api_key``, ``API-KEY`` and ``apikey`` are one name): ``access_token``, ``refresh_token``,
    ``id_token``, ``token``, ``password``, ``passwd``, ``client_secret``, ``secret``, ``api_key``, ``apikey``,
    ``x-api-key``, ``authorization``, ``cookie``, ``set-cookie``, ``SessionId``, ``B1SESSION``.

PHI (``phi=True``), in every FHIR resource (a JSON object with a string ``resourceType``) at any depth
    Values are replaced by deterministic pseudonyms: HMAC-SHA256 under ``key`` of the original value, rendered
    in the original's shape, so equal inputs give equal pseudonyms across exchanges and runs (and different
    pseudonyms under another key):

    * ``name`` (HumanName, list or single): ``family``, ``given[]``, ``prefix[]``, ``suffix[]``, ``text`` →
      ``Name-<8 hex>``; a plain string ``name`` of a person resource likewise;
    * ``telecom[].value`` → ``+00-<10 hex>`` (phone, fax, sms, pager, other), ``<10 hex>@example.invalid``
      (email or anything with ``@``), ``https://<10 hex>.example.invalid/`` (url);
    * ``address`` (and ``valueAddress``): only ``use``, ``type`` and ``country`` are kept; ``line[]``, ``city``,
      ``district``, ``state``, ``text`` → ``Line-``/``City-``/``District-``/``State-``/``Address-<8 hex>``;
      ``postalCode`` keeps its first three characters (spaces removed, upper-cased — what
      ``clinical.patient`` keeps as ``postal_prefix``, the HIPAA Safe Harbor three-digit rule) followed by
      ``-PC-<6 hex>``, so golden events still show the region; anything else (``period``, geolocation
      ``extension``) is dropped;
    * ``birthDate`` keeps only its year, as ``YYYY-01-01`` (still a full FHIR date for downstream schemas);
      ``deceasedDateTime`` likewise. Other dates (effective, issued, periods, ``meta.lastUpdated``) are kept:
      incremental sync and golden events depend on them;
    * ``identifier`` (list or single, at any depth inside a resource, so ``Reference.identifier`` too)
      ``.value`` → ``ID-<10 hex>``; the ``system`` is kept;
    * narrative ``text.div`` → a fixed ``<div>`` saying ``redacted``; free text ``note[].text`` and any
      ``comment`` string → ``Text-<8 hex>``. ``valueString`` (e.g. social-history answers) is kept, except
      inside ``extension`` of a person resource (``mothersMaidenName`` and the like) where it becomes
      ``Text-<8 hex>``; ``valueHumanName`` / ``valueAddress`` in extensions are treated as name / address;
    * ``photo`` and ``contact`` (next of kin: names, phones, addresses) are removed entirely;
    * ``id`` of person resources (:data:`PERSON_TYPES`: Patient, Practitioner, RelatedPerson, Person) and every
      reference to one — ``Patient/<id>`` anywhere in any string (references, ``fullUrl``, link URLs, the
      request path), ``urn:uuid:<id>`` of an id known to belong to a person, query parameters ``patient``,
      ``subject``, ``_id`` on a person endpoint, ``performer``, ``practitioner`` — get the same pseudonym, so
      references between resources still match and replay still matches requests. A UUID stays a UUID
      (version 4 bits, derived from the HMAC); any other id becomes ``pid-<24 hex>``; ``Reference.display``
      next to a person reference is treated as a name. Observation, Encounter and other ids are not PHI and are
      kept (they carry no identity and golden events key on them).

    Id pseudonyms are *recognisable under the same key* (their tail is an HMAC tag over the rest), and so are
    the ``Name-``/``ID-``/... forms: redacting an already redacted document leaves it unchanged. That lets
    replay run a live request line through :meth:`Redactor.request_line` whether its ids came from the
    configuration (real, mapped to the recorded pseudonym) or from a redacted response (kept as they are).

    Not covered: free text outside the fields above, PHI in non-JSON bodies other than ``Patient/<id>``
    references, ages above 89 (the year is kept as is).

HL7 v2 (``phi=True``), in a document's ``hl7`` member (an ER7 message as an MLLP recording holds it)
    :meth:`Redactor.hl7`, with the message's own delimiters and separators kept: PID-2/3/4/19/20/21 and
    MRG-1..4 identifiers (CX.1) → ``ID-<10 hex>`` (the same value gives the same pseudonym in every message, so
    ADT, ORU and merges still name one patient); PID-5/6/9 and MRG-7 names → ``Name-<8 hex>`` per component;
    PID-7 birth and PID-29 death → the year only; PID-11 address → ``Line-``/``City-``/``State-``, the postal
    code keeping its first three characters, country and address type kept, the rest dropped; PID-13/14
    phones → ``ID-<10 hex>``; persons in PV1-7/8/9/17/52, PD1-4, ORC-10/11/12, OBR-10/16/28/32..35 and OBX-16
    (XCN: id and names); NTE-3 comments and the error texts of acknowledgements (MSA-3, ERR-8) → ``Text-``;
    NK1, GT1, IN1..IN3, ROL and PRT segments (other people) are removed. Not covered: free text in OBX-5 and
    Z-segments (a plugin's own segments: its recording tool must keep PHI out of them).

:func:`scan_for_leaks` is the check a test or CI runs on a written fixture file: which planted values appear.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable
from typing import Any, Final

from inlet.core.secrets import known_secrets

__all__ = ["CREDENTIAL_NAMES", "PERSON_TYPES", "Redactor", "scan_for_leaks"]

MASK: Final = "***"

CREDENTIAL_NAMES: Final[frozenset[str]] = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "password",
        "passwd",
        "client_secret",
        "secret",
        "api_key",
        "apikey",
        "x-api-key",
        "authorization",
        "cookie",
        "set-cookie",
        "SessionId",
        "B1SESSION",
    }
)
"""Member / parameter names whose value is a credential (matched case-insensitively, ``-``/``_`` ignored)."""

PERSON_TYPES: Final[frozenset[str]] = frozenset({"Patient", "Practitioner", "RelatedPerson", "Person"})
"""FHIR resource types whose ids identify a person (pseudonymised, as are references to them)."""


def _norm(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


_CRED_NORM: Final = frozenset(_norm(n) for n in CREDENTIAL_NAMES)
_CRED_ALT: Final = "|".join(
    sorted(
        {"[-_]?".join(re.escape(p) for p in re.split(r"[-_]", n.lower())) for n in CREDENTIAL_NAMES},
        key=len,
        reverse=True,
    )
)
_RE_JSONISH: Final = re.compile(rf'(?i)("(?:{_CRED_ALT})"\s*:\s*)"(?:[^"\\]|\\.)*"')
_RE_KV: Final = re.compile(rf"(?i)(?<![A-Za-z0-9])((?:{_CRED_ALT})\s*[=:]\s*)(?!\*\*\*)[^\s&;,\"'<>]+")
_RE_AUTH: Final = re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\*\*\*)[A-Za-z0-9._~+/=-]{4,}")

_PERSON_ALT: Final = "|".join(sorted(PERSON_TYPES, key=len, reverse=True))
_RE_PERSON_REF: Final = re.compile(rf"(?<![A-Za-z0-9])({_PERSON_ALT})/([A-Za-z0-9\-.]{{1,64}})")
_UUID_PAT: Final = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_RE_URN_UUID: Final = re.compile(rf"urn:uuid:({_UUID_PAT})")
_RE_UUID: Final = re.compile(rf"^{_UUID_PAT}$")
_RE_PSEUDO_TEXT: Final = re.compile(
    r"^(?:(?:Name|Line|City|District|State|Address|Text)-[0-9a-f]{8}|(?:[0-9A-Z]{3}-)?PC-[0-9a-f]{6}|ID-[0-9a-f]{10}"
    r"|\+00-[0-9a-f]{10}|[0-9a-f]{10}@example\.invalid|https://[0-9a-f]{10}\.example\.invalid/)$"
)
_RE_YEAR: Final = re.compile(r"^(\d{4})")
_REDACTED_DIV: Final = '<div xmlns="http://www.w3.org/1999/xhtml">redacted</div>'

# Query parameters carrying person ids (values may be comma-separated, typed ``Patient/1`` or bare ``1``).
_ID_PARAMS: Final = frozenset({"patient", "subject", "performer", "practitioner", "requester", "author"})
_NAME_PARAMS: Final = frozenset({"name", "family", "given", "phonetic"})


_HL7_FIELDS: Final[dict[str, dict[int, str]]] = {
    "PID": {
        2: "id",
        3: "id",
        4: "id",
        5: "name",
        6: "name",
        7: "year",
        9: "name",
        11: "address",
        13: "phone",
        14: "phone",
        19: "id",
        20: "id",
        21: "id",
        29: "year",
    },
    "MRG": {1: "id", 2: "id", 3: "id", 4: "id", 7: "name"},
    "PV1": {7: "person", 8: "person", 9: "person", 17: "person", 52: "person"},
    "PD1": {4: "person"},
    "ORC": {10: "person", 11: "person", 12: "person"},
    "OBR": {10: "person", 16: "person", 28: "person", 32: "person", 33: "person", 34: "person", 35: "person"},
    "OBX": {16: "person"},
    "NTE": {3: "text"},
    "ERR": {8: "text"},
    "MSA": {3: "text"},
}
"""HL7 v2 fields holding PHI, and how each is pseudonymised (:meth:`Redactor.hl7`)."""

_HL7_DROPPED: Final = frozenset({"NK1", "GT1", "IN1", "IN2", "IN3", "ROL", "PRT"})
"""HL7 v2 segments about other people (next of kin, guarantor, insured, care team): removed whole."""


class Redactor:
    """Callable redacting one exchange document; see the module docstring for exactly what it does.

    ``key`` keys the HMAC behind every pseudonym (keep it per customer, out of the repository: with it, anyone
    can test a guessed value against a fixture). ``phi`` switches on PHI pseudonymisation. An instance
    remembers the person ids it has seen, so ``urn:uuid:<id>`` of a Patient is pseudonymised in later
    exchanges too; use one instance per recording.
    """

    def __init__(self, key: bytes, *, phi: bool) -> None:
        if not key:
            raise ValueError("the pseudonymisation key must not be empty")
        self._key = bytes(key)
        self.phi = phi
        self._person_ids: set[str] = set()

    # -- public -------------------------------------------------------------------------------------------

    def __call__(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A redacted copy of ``doc``."""
        secrets = self._secrets()
        if self.phi and isinstance(doc.get("hl7"), str):
            doc = {**doc, "hl7": self.hl7(doc["hl7"])}
        if self.phi:
            self._collect_person_ids(doc)
        out: dict[str, Any] = {}
        for k, v in doc.items():
            key = self._mask(k, secrets) if isinstance(k, str) else k
            if k == "request" and isinstance(v, str):
                out[key] = self._request_line(v, secrets)
            elif _norm(str(k)) in _CRED_NORM and v is not None:
                out[key] = MASK
            else:
                out[key] = self._value(v, in_resource=False, secrets=secrets)
        return out

    def request_line(self, line: str) -> str:
        """Redact a ``METHOD path?query`` line (as :func:`core.recording.request_key` makes) on its own."""
        return self._request_line(line, self._secrets())

    def hl7(self, text: str) -> str:
        """PHI of one HL7 v2 message (ER7 text) pseudonymised, its delimiters and segment separators kept.

        See the module docstring ("HL7 v2"). Idempotent: pseudonyms are recognised and kept.
        """
        if not text.startswith("MSH") or len(text) < 8:
            return text
        f = text[3]
        enc = text[4:8].split(f, 1)[0]
        comp = enc[0] if enc else "^"
        rep = enc[1] if len(enc) > 1 else "~"
        out: list[str] = []
        for part in re.split(r"(\r\n|\r|\n)", text):
            if part in ("\r\n", "\r", "\n") or len(part) < 3:
                out.append(part)
                continue
            name = part[:3]
            if name in _HL7_DROPPED:
                if out and out[-1] in ("\r\n", "\r", "\n"):
                    out.pop()  # the segment and its separator
                continue
            rules = _HL7_FIELDS.get(name)
            if rules is None:
                out.append(part)
                continue
            fields = part.split(f)
            for number, kind in rules.items():
                if number < len(fields) and fields[number]:
                    fields[number] = rep.join(self._hl7_field(kind, r, comp) for r in fields[number].split(rep))
            out.append(f.join(fields))
        return "".join(out)

    def _hl7_field(self, kind: str, value: str, comp: str) -> str:
        c = value.split(comp)
        if kind == "id":  # CX / XCN.1: the identifier; assigning authority and type stay
            c[0] = self._pseudo("ID", c[0], 10) if c[0] else c[0]
        elif kind == "name":  # XPN: every component that holds text
            c = [self._pseudo("Name", x, 8) if x and i < 5 else x for i, x in enumerate(c)]
        elif kind == "person":  # XCN: id, then family, given, middle
            c = [
                self._pseudo("ID", x, 10) if i == 0 and x else self._pseudo("Name", x, 8) if x and 1 <= i <= 3 else x
                for i, x in enumerate(c)
            ]
        elif kind == "address":  # XAD: lines, city, state pseudonymised; postal prefix, country, type kept
            kept = []
            for i, x in enumerate(c[:7]):
                if not x or i in (5, 6):
                    kept.append(x)
                elif i == 4:
                    kept.append(self._postal(x))
                else:
                    kept.append(self._pseudo({0: "Line", 1: "Line", 2: "City", 3: "State"}[i], x, 8))
            c = kept
        elif kind == "phone":  # XTN: the number (or address) only
            c = [self._pseudo("ID", value, 10)] if value else [value]
        elif kind == "year":  # DTM of birth / death: the year only
            m = _RE_YEAR.match(c[0])
            c = [m.group(1)] if m else [""]
        elif kind == "text":
            c = [self._pseudo("Text", value, 8)] if value else [value]
        return comp.join(c)

    def pseudonym_id(self, value: str) -> str:
        """The pseudonym of a person resource id (a UUID stays a UUID); pseudonyms map to themselves."""
        if self._is_pseudo_id(value):
            return value
        h = self._hmac("id", value)
        if _RE_UUID.match(value):
            body = list(h[:20])
            body[12] = "4"  # version 4
            body[16] = "89ab"[int(body[16], 16) & 0x3]  # RFC 4122 variant
            b = "".join(body)
            t = b + self._hmac("tag", b)[:12]
            return f"{t[:8]}-{t[8:12]}-{t[12:16]}-{t[16:20]}-{t[20:]}"
        return f"pid-{h[:16]}{self._hmac('tag', h[:16])[:8]}"

    # -- secrets ------------------------------------------------------------------------------------------

    @staticmethod
    def _secrets() -> list[str]:
        return sorted(known_secrets(), key=len, reverse=True)  # longest first: a secret may contain another

    @staticmethod
    def _mask(text: str, secrets: list[str]) -> str:
        for s in secrets:
            if s in text:
                text = text.replace(s, MASK)
        return text

    def _string(self, text: str, secrets: list[str]) -> str:
        text = self._mask(text, secrets)
        text = _RE_AUTH.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        text = _RE_JSONISH.sub(lambda m: f'{m.group(1)}"{MASK}"', text)
        if "?" in text and ("://" in text or text.startswith("/")):
            base, _, query = text.partition("?")
            text = f"{base}?{self._query(query, base, secrets, resort=False)}"
        text = _RE_KV.sub(lambda m: f"{m.group(1)}{MASK}", text)
        if self.phi:
            text = self._refs(text)
        return text

    # -- request line -------------------------------------------------------------------------------------

    def _request_line(self, line: str, secrets: list[str]) -> str:
        line = self._mask(line, secrets)
        method, sep, target = line.partition(" ")
        if not sep:
            return self._string(line, secrets)
        path, qsep, query = target.partition("?")
        if self.phi:
            path = self._refs(path)
        return f"{method} {path}" + (f"?{self._query(query, path, secrets, resort=True)}" if qsep else "")

    def _query(self, query: str, path: str, secrets: list[str], *, resort: bool) -> str:
        if not query:
            return query
        person_endpoint = any(seg in PERSON_TYPES for seg in path.split("/")[-2:])
        items: list[tuple[str, str]] = []
        for part in query.split("&"):
            name, eq, value = part.partition("=")
            if not eq:
                items.append((part, "\x00"))
                continue
            n = _norm(name)
            base = name.split(":", 1)[0].lower()
            if n in _CRED_NORM:
                value = MASK
            elif self.phi:
                if base in _ID_PARAMS or (base == "_id" and person_endpoint):
                    value = ",".join(
                        self._refs(v) if "/" in v else self.pseudonym_id(v) if v else v for v in value.split(",")
                    )
                elif base == "identifier":
                    value = ",".join(self._token(v) for v in value.split(","))
                elif person_endpoint and base in _NAME_PARAMS:
                    value = ",".join(self._pseudo("Name", v, 8) for v in value.split(","))
                elif person_endpoint and base in {
                    "phone",
                    "email",
                    "telecom",
                    "address",
                    "address-city",
                    "address-postalcode",
                    "address-state",
                }:
                    value = ",".join(self._pseudo("ID", v, 10) for v in value.split(","))
                elif person_endpoint and base == "birthdate":
                    m = re.match(r"^([a-z]{2})?(\d{4})", value)
                    value = f"{m.group(1) or ''}{m.group(2)}" if m else value
                else:
                    value = self._refs(value)
            items.append((name, value))
        if resort:
            items.sort()
        return "&".join(k if v == "\x00" else f"{k}={v}" for k, v in items)

    def _token(self, value: str) -> str:
        system, bar, code = value.rpartition("|")
        return f"{system}{bar}{self._pseudo('ID', code, 10)}" if code else value

    # -- PHI ----------------------------------------------------------------------------------------------

    def _hmac(self, kind: str, value: str) -> str:
        return hmac.new(self._key, f"{kind}\x00{value}".encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def _pseudo(self, prefix: str, value: str, n: int) -> str:
        if _RE_PSEUDO_TEXT.match(value):
            return value
        return f"{prefix}-{self._hmac(prefix, value)[:n]}"

    def _is_pseudo_id(self, value: str) -> bool:
        if _RE_UUID.match(value):
            hx = value.replace("-", "").lower()
            return hmac.compare_digest(hx[20:], self._hmac("tag", hx[:20])[:12])
        if value.startswith("pid-") and len(value) == 28:
            return hmac.compare_digest(value[20:], self._hmac("tag", value[4:20])[:8])
        return False

    def _refs(self, text: str) -> str:
        if "/" in text:
            text = _RE_PERSON_REF.sub(lambda m: f"{m.group(1)}/{self.pseudonym_id(m.group(2))}", text)
        if "urn:uuid:" in text:
            text = _RE_URN_UUID.sub(
                lambda m: f"urn:uuid:{self.pseudonym_id(m.group(1))}" if m.group(1) in self._person_ids else m.group(0),
                text,
            )
        return text

    def _collect_person_ids(self, node: Any) -> None:
        stack = [node]
        while stack:
            cur = stack.pop()
            if isinstance(cur, dict):
                rtype = cur.get("resourceType")
                if isinstance(rtype, str) and rtype in PERSON_TYPES and isinstance(cur.get("id"), str):
                    self._person_ids.add(cur["id"])
                stack.extend(cur.values())
            elif isinstance(cur, list):
                stack.extend(cur)
            elif isinstance(cur, str) and "/" in cur:
                self._person_ids.update(m.group(2) for m in _RE_PERSON_REF.finditer(cur))

    def _name(self, node: Any, secrets: list[str]) -> Any:
        if isinstance(node, list):
            return [self._name(x, secrets) for x in node]
        if isinstance(node, str):
            return self._pseudo("Name", node, 8)
        if not isinstance(node, dict):
            return self._value(node, in_resource=True, secrets=secrets)
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k in {"family", "text", "given", "prefix", "suffix"}:
                out[k] = self._name(v, secrets)
            else:
                out[k] = self._value(v, in_resource=True, secrets=secrets)
        return out

    def _address(self, node: Any, secrets: list[str]) -> Any:
        if isinstance(node, list):
            return [self._address(x, secrets) for x in node]
        if not isinstance(node, dict):
            return self._pseudo("Address", node, 8) if isinstance(node, str) else None
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k in {"use", "type", "country"}:
                out[k] = self._value(v, in_resource=True, secrets=secrets)
            elif k == "line":
                out[k] = (
                    [self._pseudo("Line", str(x), 8) for x in v]
                    if isinstance(v, list)
                    else self._pseudo("Line", str(v), 8)
                )
            elif k in {"city", "district", "state", "text"}:
                out[k] = self._pseudo(
                    {"city": "City", "district": "District", "state": "State", "text": "Address"}[k], str(v), 8
                )
            elif k == "postalCode":
                out[k] = self._postal(str(v))
        return out

    def _postal(self, code: str) -> str:
        if _RE_PSEUDO_TEXT.match(code):
            return code
        prefix = code.replace(" ", "").upper()[:3]
        pseudo = self._pseudo("PC", code, 6)
        return f"{prefix}-{pseudo}" if len(prefix) == 3 and prefix.isalnum() else pseudo

    def _telecom(self, node: Any, secrets: list[str]) -> Any:
        if isinstance(node, list):
            return [self._telecom(x, secrets) for x in node]
        if not isinstance(node, dict):
            return self._value(node, in_resource=True, secrets=secrets)
        out = {k: self._value(v, in_resource=True, secrets=secrets) for k, v in node.items() if k != "value"}
        if "value" in node:
            v = str(node["value"])
            system = node.get("system")
            if _RE_PSEUDO_TEXT.match(v):
                out["value"] = v
            elif system == "email" or "@" in v:
                out["value"] = f"{self._hmac('email', v)[:10]}@example.invalid"
            elif system == "url":
                out["value"] = f"https://{self._hmac('url', v)[:10]}.example.invalid/"
            else:
                out["value"] = f"+00-{self._hmac('phone', v)[:10]}"
        return out

    def _identifier(self, node: Any, secrets: list[str]) -> Any:
        if isinstance(node, list):
            return [self._identifier(x, secrets) for x in node]
        if not isinstance(node, dict):
            return self._value(node, in_resource=True, secrets=secrets)
        return {
            k: self._pseudo("ID", str(v), 10)
            if k == "value" and v is not None
            else self._value(v, in_resource=True, secrets=secrets)
            for k, v in node.items()
        }

    def _note(self, notes: list[Any], secrets: list[str]) -> list[Any]:
        return [
            {
                nk: self._pseudo("Text", nv, 8)
                if nk == "text" and isinstance(nv, str)
                else self._value(nv, in_resource=True, secrets=secrets)
                for nk, nv in n.items()
            }
            if isinstance(n, dict)
            else self._value(n, in_resource=True, secrets=secrets)
            for n in notes
        ]

    def _year(self, value: Any) -> Any:
        m = _RE_YEAR.match(value) if isinstance(value, str) else None
        return f"{m.group(1)}-01-01" if m else None

    def _extension(self, node: Any, secrets: list[str]) -> Any:
        if isinstance(node, list):
            return [self._extension(x, secrets) for x in node]
        if not isinstance(node, dict):
            return self._value(node, in_resource=True, secrets=secrets)
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "valueString" and isinstance(v, str):
                out[k] = self._pseudo("Text", v, 8)
            elif k == "valueAddress":
                out[k] = self._address(v, secrets)
            elif k == "valueHumanName":
                out[k] = self._name(v, secrets)
            elif k == "extension":
                out[k] = self._extension(v, secrets)
            else:
                out[k] = self._value(v, in_resource=True, secrets=secrets)
        return out

    def _resource(self, node: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
        rtype = node.get("resourceType")
        person = isinstance(rtype, str) and rtype in PERSON_TYPES
        handlers: dict[str, Callable[[Any, list[str]], Any]] = {
            "telecom": self._telecom,
            "address": self._address,
            "valueAddress": self._address,
            "identifier": self._identifier,
        }
        out: dict[str, Any] = {}
        for k, v in node.items():
            if not isinstance(k, str):
                out[k] = self._value(v, in_resource=True, secrets=secrets)
                continue
            if _norm(k) in _CRED_NORM and v is not None:
                out[self._mask(k, secrets)] = MASK
            elif k in {"photo", "contact"}:
                continue
            elif k == "id" and person and isinstance(v, str):
                out[k] = self.pseudonym_id(self._mask(v, secrets))
            elif k == "name" and (person or isinstance(v, (list, dict))):
                out[k] = self._name(v, secrets)
            elif k in handlers:
                out[k] = handlers[k](v, secrets)
            elif k in {"birthDate", "deceasedDateTime"}:
                year = self._year(v)
                if year is not None:
                    out[k] = year
            elif k == "text" and isinstance(v, dict):
                out[k] = {
                    tk: _REDACTED_DIV if tk == "div" else self._value(tv, in_resource=True, secrets=secrets)
                    for tk, tv in v.items()
                }
            elif k == "extension" and person:
                out[k] = self._extension(v, secrets)
            elif k == "comment" and isinstance(v, str):
                out[k] = self._pseudo("Text", v, 8)
            elif k == "note" and isinstance(v, list):
                out[k] = self._note(v, secrets)
            else:
                out[self._mask(k, secrets)] = self._value(v, in_resource=True, secrets=secrets)
        return out

    def _value(self, node: Any, *, in_resource: bool, secrets: list[str] | None = None) -> Any:
        """Generic walk: secrets everywhere; resources (and free text / references inside them) when ``phi``."""
        if secrets is None:
            secrets = self._secrets()
        if isinstance(node, str):
            return self._string(node, secrets)
        if isinstance(node, list):
            return [self._value(x, in_resource=in_resource, secrets=secrets) for x in node]
        if not isinstance(node, dict):
            return node
        if self.phi and isinstance(node.get("resourceType"), str):
            return self._resource(node, secrets)
        out: dict[Any, Any] = {}
        person_ref = (
            self.phi
            and isinstance(node.get("reference"), str)
            and bool(_RE_PERSON_REF.search(node["reference"]) or node["reference"].split(":")[-1] in self._person_ids)
        )
        for k, v in node.items():
            key = self._mask(k, secrets) if isinstance(k, str) else k
            if isinstance(k, str) and _norm(k) in _CRED_NORM and v is not None:
                out[key] = MASK
            elif self.phi and in_resource and k in {"comment"} and isinstance(v, str):
                out[key] = self._pseudo("Text", v, 8)
            elif self.phi and in_resource and k == "note" and isinstance(v, list):
                out[key] = self._note(v, secrets)
            elif self.phi and in_resource and k == "identifier":
                out[key] = self._identifier(v, secrets)
            elif person_ref and k == "display" and isinstance(v, str):
                out[key] = self._pseudo("Name", v, 8)
            else:
                out[key] = self._value(v, in_resource=in_resource, secrets=secrets)
        return out


def scan_for_leaks(text: str, *, secrets: Iterable[str], phi_values: Iterable[str]) -> list[str]:
    """The planted values (secrets first, then PHI, each once, in the given order) that occur in ``text``.

    A value is found verbatim, case-insensitively, or JSON-escaped (as it would be inside a JSON string).
    Empty values are ignored.
    """
    lowered = text.lower()
    found: list[str] = []
    for value in [*secrets, *phi_values]:
        if not value or value in found:
            continue
        escaped = json.dumps(value)[1:-1]
        if value.lower() in lowered or escaped in text:
            found.append(value)
    return found
