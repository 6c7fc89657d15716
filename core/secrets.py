"""Secrets come only from the environment or from files, and never reach a log line.

In a settings model a secret field is typed :data:`Secret`. In YAML it is written as
``{env: NAME}`` or ``{file: /run/secrets/name}``; a literal string is refused, so a token can never
be committed inside a customer's config. Every resolved value is remembered by :func:`mask`, which
the logging processor uses to blank it out of every line.

Offline work (``inlet replay``, generated contract tests) validates settings with the context
``{"offline": True}``: a secret whose variable or file is absent then becomes an :class:`OfflineSecret`
stand-in instead of an error, because recorded exchanges were redacted and answer any credential.
Whatever needs the secret's *form* (a signing key) checks for the stand-in and uses a throwaway value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr, ValidationInfo

__all__ = ["OfflineSecret", "Secret", "known_secrets", "mask", "resolve_secret"]

_KNOWN: set[str] = set()
_MAX_SECRET_FILE = 64 * 1024


class OfflineSecret(SecretStr):
    """The stand-in for a secret that offline replay does not need (its env variable or file is absent)."""


def _offline(info: ValidationInfo) -> bool:
    context = getattr(info, "context", None)
    return isinstance(context, dict) and bool(context.get("offline"))


def resolve_secret(ref: Any, *, offline: bool = False) -> SecretStr:
    """Resolve ``{env: NAME}`` or ``{file: PATH}``; anything else is an error saying what to write."""
    if isinstance(ref, SecretStr):
        return ref
    if not isinstance(ref, dict) or len(ref) != 1 or next(iter(ref)) not in ("env", "file"):
        raise ValueError(
            "a secret must come from the environment or a file: write {env: VARIABLE} or {file: PATH}, "
            "never the value itself"
        )
    kind, name = next(iter(ref.items()))
    if offline and not (os.environ.get(str(name)) if kind == "env" else Path(str(name)).is_file()):
        return OfflineSecret(f"offline-stand-in-for-{kind}-{name}")
    if kind == "env":
        value = os.environ.get(str(name))
        if value is None or value == "":
            raise ValueError(f"environment variable {name} is not set (it holds this secret)")
    else:
        path = Path(str(name))
        if not path.is_file():
            raise ValueError(f"secret file {path} does not exist")
        if path.stat().st_size > _MAX_SECRET_FILE:
            raise ValueError(f"secret file {path} is larger than {_MAX_SECRET_FILE} bytes")
        value = path.read_text().strip()
        if not value:
            raise ValueError(f"secret file {path} is empty")
    if len(value) >= 4:  # masking a 1-3 character string would blank out ordinary words
        _KNOWN.add(value)
    return SecretStr(value)


def _validate(ref: Any, info: ValidationInfo) -> SecretStr:
    return resolve_secret(ref, offline=_offline(info))


Secret = Annotated[SecretStr, BeforeValidator(_validate)]
"""A settings field holding a secret resolved from env or file."""


def remember(values: Iterable[str]) -> None:
    """Mask these values too: the secrets a parent process resolved, handed to a child (core.mqtt_receiver)."""
    _KNOWN.update(v for v in values if len(v) >= 4)


def known_secrets() -> frozenset[str]:
    """Every secret value resolved so far in this process."""
    return frozenset(_KNOWN)


def mask(text: str) -> str:
    """Replace every known secret value in ``text`` with ``***``."""
    for secret in _KNOWN:
        if secret in text:
            text = text.replace(secret, "***")
    return text
