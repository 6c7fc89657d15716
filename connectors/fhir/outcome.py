"""FHIR ``OperationOutcome``: how a FHIR server says why it refused or failed, read into typed errors.

:func:`outcome_issues` reads the issues out of a body (bytes or parsed; () if it is not an OperationOutcome),
:class:`OperationOutcomeError` carries them on a 4xx so callers branch on ``codes`` (``"not-supported"``...),
and :func:`final_outcome` is the :data:`core.http.FinalStatus` hook that keeps a 5xx from being retried when
its issues say the failure is not transient. Shared by the FHIR connectors (bulk export, search).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from inlet.core.exact_json import member
from inlet.core.http import HttpResponse, UpstreamRefused
from inlet.core.secrets import mask

__all__ = ["TRANSIENT_CODES", "Issue", "OperationOutcomeError", "describe_issues", "final_outcome", "outcome_issues"]

TRANSIENT_CODES = frozenset({"transient", "throttled", "timeout", "lock-error", "no-store", "incomplete"})
"""OperationOutcome issue codes that say "try again"; a 5xx whose issues carry none of them is final."""

Issue = tuple[str, str, str]
"""One OperationOutcome issue: (severity, code, diagnostics or details.text)."""


def outcome_issues(body: Any) -> tuple[Issue, ...]:
    """The issues of an OperationOutcome (bytes or parsed); () if it is not one."""
    if isinstance(body, bytes | bytearray):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            return ()
    if type(body) is not dict or body.get("resourceType") != "OperationOutcome":
        return ()
    out = []
    for issue in body.get("issue") or ():
        if type(issue) is dict:
            text = issue.get("diagnostics") or member(issue, "details", "text") or ""
            out.append((str(issue.get("severity", "")), str(issue.get("code", "")), str(text)))
    return tuple(out)


def describe_issues(issues: Sequence[Issue]) -> str:
    """The issues as one line for an error message: ``"error processing: bad date; ..."``."""
    return "; ".join(f"{sev or '?'} {code or '?'}: {text}".rstrip(": ") for sev, code, text in issues)


class OperationOutcomeError(UpstreamRefused):
    """The FHIR server refused a request (4xx) and said why in an OperationOutcome: fix the request or config.

    ``codes`` and ``issues`` hold what the server said, so callers branch on ``"not-supported"`` etc.
    """

    def __init__(self, what: str, status: int, issues: Sequence[Issue], body: bytes = b"") -> None:
        said = describe_issues(issues) or body[:300].decode("utf-8", "replace") or "no body"
        super().__init__(mask(f"{what} answered {status}: {said}"), status, body)
        self.issues = tuple(issues)
        self.codes = tuple(code for _, code, _ in self.issues)

    @classmethod
    def from_refusal(cls, what: str, exc: UpstreamRefused) -> UpstreamRefused:
        """``exc`` as an OperationOutcomeError when its body is an OperationOutcome, else ``exc`` itself."""
        issues = outcome_issues(exc.body)
        if not issues or exc.status is None:
            return exc
        return cls(what, exc.status, issues, exc.body)


def final_outcome(answer: HttpResponse) -> bool:
    """True for a 5xx whose OperationOutcome names no transient code: the server says the job itself failed,
    so retrying the same request will not help (the caller decides, e.g. a new export)."""
    issues = outcome_issues(answer.body)
    return bool(issues) and answer.status >= 500 and not any(code in TRANSIENT_CODES for _, code, _ in issues)
