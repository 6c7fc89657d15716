"""Hôpital du Lac — a Lausanne hospital's HL7 v2 feed (ADT and lab results over MLLP, Europe/Zurich).

One integration (``hopital_du_lac.hl7``), the family's MLLP connector; what the plugin fixes for this customer:

- **ISO-8859-1 without saying so.** The hospital's interface engine writes French text (names, lab comments:
  ``Sérum légèrement hémolysé``) in ISO-8859-1 and leaves MSH-18 empty (some messages say ``ASCII``). The
  family would read those bytes as UTF-8 and refuse them (``AR``); the plugin makes ``latin-1`` the default
  charset, so an empty or ``ASCII`` MSH-18 is read as ISO-8859-1 (a message that names its charset in MSH-18
  is still read in that one). The acknowledgements go back in ISO-8859-1 too.
- **``\\n`` between segments.** The engine ends segments with a line feed, not the standard carriage return.
  The family's parser accepts ``\\r``, ``\\n`` and ``\\r\\n``, so nothing is converted; the plugin's fixture
  keeps the line feeds, so a parser change that stops accepting them fails its contract test. The
  acknowledgements use ``\\r``, which the engine accepts.
- **``AR`` for content errors.** The engine resends a message answered ``AE`` every minute, forever; the
  hospital wants bad content to stop at the first answer and be fixed in the EHR. So a mapping failure
  (``ack_codes.mapping``) is answered ``AR`` here (the family's default is ``AE``); the DLQ record is the same.
- The zone: HL7 times without an offset are Lausanne wall time; the plugin refuses any other configured zone.
"""

from __future__ import annotations

from typing import ClassVar, Final

from pydantic import Field

from inlet.connectors.hl7v2.connector import AckCodes, Hl7v2Connector, Hl7v2Settings
from inlet.core.connector import PluginSettings

__all__ = ["ZONE", "HopitalDuLacHl7", "HopitalDuLacSettings"]

ZONE: Final = "Europe/Zurich"


class HopitalDuLacSettings(Hl7v2Settings):
    """The customer's defaults: ISO-8859-1 text, ``AR`` for content errors; ``mllp`` per YAML."""

    default_charset: str = "latin-1"
    ack_codes: AckCodes = Field(default_factory=lambda: AckCodes(mapping="AR"))


class HopitalDuLacHl7(Hl7v2Connector):
    """Hôpital du Lac's ADT and lab feed: ISO-8859-1 without MSH-18, ``\\n`` separators, AR for bad content."""

    name: ClassVar[str] = "hopital_du_lac.hl7"
    settings_model: ClassVar[type[PluginSettings]] = HopitalDuLacSettings
    description: ClassVar[str] = "Hôpital du Lac HL7 v2 over MLLP (ISO-8859-1, \\n separators, Europe/Zurich)"

    source_zone: ClassVar[str | None] = ZONE
