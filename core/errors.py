"""The one error hierarchy of inlet.

Errors are grouped by what the caller must do, and the behaviour lives on the class
(``retriable``, ``stage``), so the pipeline's decisions are one attribute read::

    InletError                      root; never raised itself
    ├── ConfigError                 fatal: a config file is wrong; names file, key, expectation
    ├── SinkRefused                 fatal: Kafka refused inlet's credentials or certificates
    ├── RecordError                 skippable: this one record goes to the DLQ, the stream goes on
    │   ├── DecodeError             stage "decode": bytes/JSON that cannot be parsed
    │   ├── MappingError            stage "map": a record the plugin cannot turn into a contract
    │   │   └── TimestampError      a timestamp that cannot be normalised (core.time)
    │   └── ContractViolation       stage "validate": the mapped event breaks its contract
    └── TransientError              retriable: try again later, never DLQ the record for it
        ├── UpstreamError           the source system is unavailable / throttling / 5xx
        └── SinkUnavailable         Kafka (or the outbox) did not acknowledge

Transient errors are never turned into DLQ records (a connectivity problem is not a bad record);
they stop the integration, which the supervisor restarts with backoff from its last checkpoint.
A :class:`SinkRefused` stops it for good: restarting cannot fix a wrong password or certificate.
"""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = [
    "ConfigError",
    "ContractViolation",
    "DecodeError",
    "InletError",
    "MappingError",
    "RecordError",
    "SinkRefused",
    "SinkUnavailable",
    "Stage",
    "TimestampError",
    "TransientError",
    "UpstreamError",
]

Stage = Literal["read", "decode", "map", "validate", "sink"]
"""Where in the pipeline a record failed; carried by DLQ records."""


class InletError(Exception):
    """Root of every error inlet raises on purpose."""

    retriable: ClassVar[bool] = False


class ConfigError(InletError):
    """A configuration file or value is wrong. The message names the file, the key and what was expected."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.message = message
        self.file = file
        self.key = key
        where = ", ".join(p for p in (f"file {file}" if file else "", f"key {key}" if key else "") if p)
        super().__init__(f"{where}: {message}" if where else message)


class SinkRefused(InletError):
    """The sink refused inlet itself: Kafka rejected its credentials or certificates (a wrong password, an
    untrusted CA, an expired certificate, a client certificate the broker does not accept, a refused OAuth token).

    Fatal, not retriable: the same configuration gets the same answer, and a restart loop would only hide it.
    The supervisor stops the integration with this message (``/readyz`` reports it) and commits nothing more.
    The message names the broker, the security protocol, the mechanism and what to fix; never a secret.
    """


class RecordError(InletError):
    """One record cannot become an event; it goes to the DLQ with this message and the stream continues.

    ``source_key``: the record's source identity when the raiser knows it and the pipeline could not yet (a
    decode failure of a resource whose id was read), so the DLQ record still names its source.
    """

    stage: ClassVar[Stage] = "map"

    def __init__(self, message: str = "", *, source_key: str | None = None) -> None:
        super().__init__(message)
        self.source_key = source_key


class DecodeError(RecordError):
    """The raw payload could not be decoded (not JSON, truncated, wrong type)."""

    stage: ClassVar[Stage] = "decode"


class MappingError(RecordError):
    """The plugin's map() could not produce a contract event from a decoded record."""

    stage: ClassVar[Stage] = "map"


class TimestampError(MappingError):
    """A timestamp value could not be normalised; the message names the value, the zone and the expectation."""


class ContractViolation(RecordError):
    """A mapped event does not satisfy its contract model."""

    stage: ClassVar[Stage] = "validate"


class TransientError(InletError):
    """Something outside inlet is unavailable for now; retry with backoff, never DLQ."""

    retriable: ClassVar[bool] = True


class UpstreamError(TransientError):
    """The upstream system failed in a way worth retrying (connect error, timeout, 429, 5xx)."""


class SinkUnavailable(TransientError):
    """The sink did not durably accept a batch; the batch's position must not be committed."""
