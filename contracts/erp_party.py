"""``erp.party`` v1.0 — one customer or vendor master record from an ERP.

Mapping rules:
- Business Central v2 ``customers`` / ``vendors``: ``kind`` customer / vendor; ``party_id`` = ``id``;
  ``number`` = ``number``; ``name`` = ``displayName``; ``party_type`` = ``type`` (customers only:
  Company / Person); ``tax_id`` = ``taxRegistrationNumber`` (empty → None); ``country`` = ``country``;
  ``currency`` = ``currencyCode`` (empty means the company's local currency, configured per connection);
  ``blocked``: the ``blocked`` option ``" "`` is not blocked, ``Ship`` / ``Invoice`` / ``Payment`` / ``All``
  are, and ``block_scope`` names which; ``last_modified`` = ``lastModifiedDateTime`` (UTC, with the precision
  of its varying fractional digits).
- Xero ``Contacts``: one event per role: ``kind`` customer when ``IsCustomer``, vendor when ``IsSupplier``
  (a contact with neither is filtered with that reason); ``party_id`` = ``ContactID``; ``number`` =
  ``ContactNumber``, else ``ContactID``; ``name`` = ``Name``; ``tax_id`` = ``TaxNumber``; ``country`` from the
  ``POBOX`` address, else the ``STREET`` one, when it is a two-letter code (Xero's ``Country`` is free text:
  a country name gives None); ``currency`` = ``DefaultCurrency``; ``blocked`` when ``ContactStatus`` is
  ``ARCHIVED`` or ``GDPRREQUEST`` (scope ``all``); ``last_modified`` = ``UpdatedDateUTC``.

Data minimisation: address lines, city, post code, phone, e-mail and website are not carried — they are
contact data of people, and consumers need the country only. ``name`` is kept (it is a company name for most
parties; for ``person`` parties it is personal data covered by the customer's processing agreement).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from inlet.contracts.base import Contract, Precision, register
from inlet.contracts.erp_invoice import CurrencyCode

__all__ = ["PartyV1"]


@register
class PartyV1(Contract):
    """A business partner the company sells to (customer) or buys from (vendor)."""

    contract_name: ClassVar[str] = "erp.party"
    contract_version: ClassVar[str] = "1.0"

    kind: Literal["customer", "vendor"]
    party_id: str = Field(min_length=1)
    number: str = Field(min_length=1)
    name: str
    party_type: Literal["company", "person"] | None = None
    tax_id: str | None = None
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    """ISO 3166-1 alpha-2, upper case."""
    currency: CurrencyCode | None = None
    blocked: bool = False
    block_scope: Literal["ship", "invoice", "payment", "all"] | None = None
    last_modified: datetime | None = None
    last_modified_precision: Precision | None = None

    def entity_key(self) -> str:
        """Customer 10000 and vendor 10000 are different parties: the kind is part of the key."""
        return self.subject()

    def subject(self) -> str:
        return f"{self.kind.capitalize()}/{self.number}"

    def occurred_at(self) -> datetime | None:
        return self.last_modified
