"""Brandt Möbel — a furniture maker near Berlin on Business Central (API v2.0), sales invoices (Europe/Berlin).

One integration (``brandt_moebel.invoices``): the family's OData v4 connector on ``salesInvoices`` with
the company's local currency EUR (an empty ``currencyCode`` means EUR). The quirk absorbed here:

- **Webshop drafts.** Their webshop extension creates a *Draft* sales invoice numbered ``WS-…`` for every
  checkout and deletes it minutes later when the order is posted under a regular number. Those drafts are no
  business fact: they are filtered with a stated reason (counted, not emitted). Drafts accounting creates by
  hand (any other number) pass as ``status: draft``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from typing_extensions import override

from inlet.connectors.erp_rest.odata import ErpODataConnector

__all__ = ["WEBSHOP_PREFIX", "BrandtMoebelInvoices"]

WEBSHOP_PREFIX: Final = "WS-"


class BrandtMoebelInvoices(ErpODataConnector):
    """Brandt Möbel's sales invoices, without the webshop's short-lived drafts."""

    name: ClassVar[str] = "brandt_moebel.invoices"
    description: ClassVar[str] = "Brandt Möbel Business Central sales invoices (webshop drafts filtered)"

    @override
    def filter(self, record: Any) -> str | None:
        if record.get("status") == "Draft" and str(record.get("number", "")).startswith(WEBSHOP_PREFIX):
            return "webshop checkout draft (WS-…): replaced by the posted invoice"
        return super().filter(record)
