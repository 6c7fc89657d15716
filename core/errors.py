"""The one error hierarchy of inlet: every exception inlet raises on purpose is defined here.

The old homes still export their names (``inlet.core.http.UpstreamRefused`` is this module's class), so plugin
code importing them from there keeps working. A few private signals live in the module that raises them and
never leave it; they are drawn in the tree too, with their module (``http._Retryable``), and subclass it.

Errors are grouped by what the caller must do, and the behaviour lives on the class, so the code that decides
reads one attribute and a new subclass with the right attributes needs no change there:

- ``retriable``: try again later, never DLQ the record for it. The pipeline lets it propagate, the supervisor
  restarts the integration with backoff from its last checkpoint, the relay resends from its watermark.
- ``fatal``: restarting cannot fix it. The supervisor stops the integration for good (``/readyz`` says why)
  and the relay stops.
- ``stage`` (a :class:`RecordError`'s): where this one record failed. It goes to the DLQ with its stage, its
  ``error_type`` and the message, and the stream goes on.

Any other failure of a record (a plugin's bug) is a DLQ record too, at the stage it happened in. Every class,
with what the caller must do (a class with a second base names it first: "also a SinkRefused")::

    InletError                      root; never raised itself
    ├── ConfigError                 fix the configuration: the message names file, key and what was expected
    │   ├── TopicsMissing           create the named topics (inlet topics apply) or set topics.create
    │   └── config._Many            local to core.config: several ConfigErrors of one file, listed one by one
    ├── SinkRefused                 fatal: Kafka refused inlet's credentials or certificates; fix them, restart
    ├── Fenced                      another replica runs this integration now: stop it here, do not restart
    ├── AuthError                   the upstream refused a token or login: fix credentials, key, scope or URL
    ├── UpstreamRefused             a status retrying will not fix (401, 403, 404, 422); status and body kept
    ├── PaginationError             the upstream's paging is broken: the same pass would fail the same way
    │   ├── PaginationLoopError     a request repeated in the pass (url, token)
    │   └── PaginationLimitError    max_pages reached with more on offer: raise it, or fix the cursor
    ├── ReplayMiss                  a replay made a request that was never recorded: record the fixtures again
    ├── RelayError                  retriable: a relay session failed; it is resent from the watermark
    │   ├── RelayBusy               another relay holds this outbox: stop one of them, or wait for it
    │   ├── RelayFailed             not retriable: the relay gave up after failures in a row (the last is named)
    │   ├── RelayRefused            also a SinkRefused; fatal: Kafka refused the relay for good; fix, restart
    │   └── relay._Isolate          local to core.relay: rows refused for good, resent alone or as DLQ records
    ├── DlqError                    `inlet dlq` cannot do what was asked (no such record): the message says why
    │   └── NotReplayable           this DLQ record cannot go through the pipeline again (stage sink, truncated)
    ├── LeftOut                     no failure: the record is left out on purpose, counted under its reason
    ├── RecordError                 this one record goes to the DLQ at its stage; the stream goes on
    │   ├── DecodeError             stage "decode": bytes/JSON that cannot be parsed
    │   │   ├── PageDecodeError     a page that is not usable JSON (url, body: the page as received)
    │   │   └── UpstreamDrift       the record departs from the recorded shape, and the drift policy is dlq
    │   ├── MappingError            stage "map": a record the plugin cannot turn into a contract
    │   │   └── TimestampError      a timestamp that cannot be normalised (core.time)
    │   └── ContractViolation       stage "validate": the mapped event breaks its contract
    └── TransientError              retriable: try again later, never DLQ the record for it
        ├── UpstreamError           the source system is unavailable / throttling / 5xx
        │   ├── UnexpectedContent   a 2xx that is not the declared content type (a proxy's HTML page)
        │   └── http._Retryable     local to core.http: one failed attempt, retried, then an UpstreamError
        └── SinkUnavailable         Kafka (or the outbox) did not acknowledge: the batch is not committed

Transient errors are never turned into DLQ records (a connectivity problem is not a bad record). A family's own
errors live in the family and subclass this tree (``fhir.bulk.BulkExportError`` is an :class:`UpstreamError`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ValidationError
from typing_extensions import override

__all__ = [
    "AuthError",
    "ConfigError",
    "ContractViolation",
    "DecodeError",
    "DlqError",
    "Fenced",
    "InletError",
    "LeftOut",
    "MappingError",
    "NotReplayable",
    "PageDecodeError",
    "PaginationError",
    "PaginationLimitError",
    "PaginationLoopError",
    "RecordError",
    "RelayBusy",
    "RelayError",
    "RelayFailed",
    "RelayRefused",
    "ReplayMiss",
    "SinkRefused",
    "SinkUnavailable",
    "Stage",
    "TimestampError",
    "TopicsMissing",
    "TransientError",
    "UnexpectedContent",
    "UpstreamDrift",
    "UpstreamError",
    "UpstreamRefused",
]

Stage = Literal["read", "decode", "map", "validate", "sink"]
"""Where in the pipeline a record failed; carried by DLQ records."""


class InletError(Exception):
    """Root of every error inlet raises on purpose. What to do about one is read from its class attributes."""

    retriable: ClassVar[bool] = False
    """Try again later (backoff, resume from the checkpoint or watermark); never a DLQ record."""
    fatal: ClassVar[bool] = False
    """Restarting cannot fix it: stop for good and say why."""


# --- configuration -------------------------------------------------------------------------------------------


class ConfigError(InletError):
    """A configuration file or value is wrong. The message names the file, the key and what was expected."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.message = message
        self.file = file
        self.key = key
        where = ", ".join(p for p in (f"file {file}" if file else "", f"key {key}" if key else "") if p)
        super().__init__(f"{where}: {message}" if where else message)


class TopicsMissing(ConfigError):
    """Topics this configuration writes are missing on Kafka and the configuration does not create them."""


# --- refusals: the same request gets the same answer -----------------------------------------------------------


class SinkRefused(InletError):
    """The sink refused inlet itself: Kafka rejected its credentials or certificates (a wrong password, an
    untrusted CA, an expired certificate, a client certificate the broker does not accept, a refused OAuth token).

    Fatal, not retriable: the same configuration gets the same answer, and a restart loop would only hide it.
    The supervisor stops the integration with this message (``/readyz`` reports it) and commits nothing more.
    The message names the broker, the security protocol, the mechanism and what to fix; never a secret.
    """

    fatal: ClassVar[bool] = True


class Fenced(InletError):
    """A newer producer with this integration's transactional id exists: another replica of the fleet took the
    integration over while this one was frozen or cut off. Its transaction is aborted (nothing of it is visible
    to ``read_committed`` consumers); the integration stops on this replica without a restart, which would fence
    the new owner in turn. Neither retriable nor fatal: the group's next assignment decides where it runs."""


class AuthError(InletError):
    """The upstream refused a token or login request: wrong credentials, key, scope or URL.

    Not retriable: trying again with the same configuration gets the same answer. The message names the URL,
    the status and the server's error; never a secret.
    """


class UpstreamRefused(InletError):
    """The upstream answered with a status that retrying will not fix (401, 403, 404, 422, ...).

    ``status`` and ``body`` (the first 2,000 bytes) are kept when there was an answer, so a family can read
    its protocol's error document (a FHIR OperationOutcome) into a more specific error.
    """

    def __init__(self, message: str, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(message)
        self.status, self.body = status, body


class PaginationError(InletError):
    """The upstream's paging is broken; retrying the same pass would repeat it, so it is not retriable."""


class PaginationLoopError(PaginationError):
    """A next link, offset, page or cursor led to a request already made in this pass."""

    def __init__(self, message: str, *, url: str, token: str | None) -> None:
        super().__init__(message)
        self.url = url
        self.token = token


class PaginationLimitError(PaginationError):
    """The pass reached ``max_pages`` and the upstream still offered more: a never-ending cursor."""

    def __init__(self, message: str, *, url: str, token: str | None, max_pages: int) -> None:
        super().__init__(message)
        self.url = url
        self.token = token
        self.max_pages = max_pages


class ReplayMiss(InletError):
    """A replayed integration made a request that was never recorded (not retriable: replay is offline)."""


# --- the outbox relay ------------------------------------------------------------------------------------------


class RelayError(InletError):
    """A relay session failed (Kafka refused a batch, a topic is unknown): it is restarted from the watermark."""

    retriable: ClassVar[bool] = True


class RelayBusy(RelayError):
    """Another relay holds this outbox."""


class RelayFailed(RelayError):
    """The relay gave up after repeated failures (``--once``)."""

    retriable: ClassVar[bool] = False


class RelayRefused(RelayError, SinkRefused):
    """Kafka refused the relay for good (credentials, certificates, cluster authorization, a row that cannot be
    dead-lettered): not retried like an outage; nothing after the watermark is marked shipped."""

    retriable: ClassVar[bool] = False  # RelayError's would win: the first base comes first


# --- one record ------------------------------------------------------------------------------------------------


class DlqError(InletError):
    """An ``inlet dlq`` command cannot do what was asked: no such DLQ record, an integration not configured."""


class NotReplayable(DlqError):
    """A DLQ record that cannot go through the pipeline again: a sink refusal (its payload is the refused event,
    not a source record), a payload cut short, or a family whose raw records are more than their payload."""


class LeftOut(InletError):
    """Not a failure: the record is left out on purpose, for ``reason`` (a decoder's "command, no readings").

    The same as ``filter()`` returning the reason: counted under it, no DLQ record, the stream goes on. For a
    hook that finds out only while decoding or mapping.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RecordError(InletError):
    """One record cannot become an event; it goes to the DLQ with this message and the stream continues.

    ``source_key``: the record's source identity when the raiser knows it and the pipeline could not yet (a
    decode failure of a resource whose id was read), so the DLQ record still names its source.
    """

    stage: ClassVar[Stage] = "map"

    def __init__(self, message: str = "", *, source_key: str | None = None) -> None:
        super().__init__(message)
        self.source_key = source_key

    @property
    def error_type(self) -> str:
        """What its DLQ record names as the error type (``dlq_error_type``): the class name."""
        return type(self).__name__


class DecodeError(RecordError):
    """The raw payload could not be decoded (not JSON, truncated, wrong type)."""

    stage: ClassVar[Stage] = "decode"


class PageDecodeError(DecodeError):
    """A page body that is not JSON, or JSON without records or a usable next link where configured.

    Keeps the raw body, so a connector can send the page to the DLQ as it was received.
    """

    def __init__(self, url: str, body: bytes, reason: str, content_type: str | None = None) -> None:
        self.url = url
        self.body = body
        self.reason = reason
        self.content_type = content_type
        super().__init__(
            f"page {url} is not a usable JSON page: {reason} (received {len(body)} bytes of "
            f"{content_type or 'no declared content type'}: {body[:200]!r})"
        )


class UpstreamDrift(DecodeError):
    """The record departs from the recorded upstream shape and the integration's drift policy is ``dlq``."""


class MappingError(RecordError):
    """The plugin's map() could not produce a contract event from a decoded record."""

    stage: ClassVar[Stage] = "map"


class TimestampError(MappingError):
    """A timestamp value could not be normalised; the message names the value, the zone and the expectation."""


class ContractViolation(RecordError):
    """A mapped event does not satisfy its contract model.

    The pipeline turns pydantic's refusal of a model ``map()`` built into one (:meth:`from_validation`); its
    DLQ records keep naming the error type ``ValidationError``, as they always have (DLQ consumers and recorded
    fixtures select on it). Raised by a plugin (a rule across fields, say), it is named ``ContractViolation``.
    """

    stage: ClassVar[Stage] = "validate"

    def __init__(self, message: str = "", *, source_key: str | None = None, error_type: str | None = None) -> None:
        super().__init__(message, source_key=source_key)
        self._error_type = error_type

    @property
    @override
    def error_type(self) -> str:
        return self._error_type or type(self).__name__

    @classmethod
    def from_validation(cls, exc: ValidationError) -> ContractViolation:
        """Pydantic's refusal, one line per field: "observation_id: String should have at least 1 character"
        reads better in a DLQ header than pydantic's block."""
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
        violation = cls(f"{exc.title} does not satisfy its contract: {fields}", error_type=type(exc).__name__)
        violation.__cause__ = exc
        return violation


# --- transient -------------------------------------------------------------------------------------------------


class TransientError(InletError):
    """Something outside inlet is unavailable for now; retry with backoff, never DLQ."""

    retriable: ClassVar[bool] = True


class UpstreamError(TransientError):
    """The upstream system failed in a way worth retrying (connect error, timeout, 429, 5xx)."""


class UnexpectedContent(UpstreamError):
    """A 2xx response that is not what was declared (content type) — a proxy's HTML page, say. Retried."""


class SinkUnavailable(TransientError):
    """The sink did not durably accept a batch; the batch's position must not be committed."""
