"""NDJSON bodies split into lines as they stream in, never a whole file in memory.

:func:`ndjson_lines` turns a streamed ``httpx.Response`` into lists of :class:`NdjsonLine` (one list per chunk
received): the original bytes of each line plus where it came from (:class:`NdjsonFile`, 1-based line number)
and what is wrong with it (over ``max_line`` bytes: a preview and a problem; a last line without newline:
``unterminated``), so a decoder can send it to the DLQ naming the file and line. Used by the Bulk Data
export connector; any NDJSON feed can use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import httpx

from inlet.core.errors import UpstreamError
from inlet.core.secrets import mask

__all__ = ["NdjsonFile", "NdjsonLine", "ndjson_lines"]

_PREVIEW = 4096  # bytes of an over-long line kept as its DLQ payload


@dataclass(frozen=True, slots=True)
class NdjsonFile:
    """Which file of an export a line came from: its position in the manifest (``index``, counted over every
    page of a paged manifest, and the 1-based ``page`` that listed it), URL, resource type, kind (``output``,
    ``error`` or ``deleted``) and the ``count`` of resources the manifest announced (None when it did not)."""

    index: int
    url: str
    type: str
    kind: Literal["output", "error", "deleted"]
    page: int = 1
    count: int | None = None


class NdjsonLine(bytes):
    """One line of an output file, as the bytes received (so a DLQ record's value is the original line),
    with where it came from: ``file``, 1-based ``line``, and ``problem`` (over-long, unterminated)."""

    file: NdjsonFile
    line: int
    problem: str | None
    unterminated: bool

    def where(self) -> str:
        shown = self.file.url.split("?", 1)[0]  # a pre-signed file URL's query is a credential
        page = f" (manifest page {self.file.page})" if self.file.page > 1 else ""
        return f"{self.file.kind} file #{self.file.index}{page} {self.file.type} ({shown}) line {self.line}"


def _line(
    data: bytes, file: NdjsonFile, number: int, problem: str | None = None, unterminated: bool = False
) -> NdjsonLine:
    out = NdjsonLine(data)
    out.file, out.line, out.problem, out.unterminated = file, number, problem, unterminated
    return out


def _too_long(size: int, cap: int) -> str:
    return f"line of {size} bytes exceeds max_line_bytes={cap} (its first {min(size, _PREVIEW)} bytes are kept)"


async def ndjson_lines(resp: httpx.Response, file: NdjsonFile, max_line: int) -> AsyncIterator[list[NdjsonLine]]:
    """The lines of a streamed body, one list per chunk received; memory stays within ``max_line`` + a chunk.

    Blank lines are counted (line numbers are the file's) but not yielded. A line over ``max_line`` keeps its
    first bytes and a problem; a last line without newline is flagged ``unterminated``.
    """
    buf = bytearray()
    number = 0
    over = 0  # > 0: length of the current line, which is over the cap and being discarded
    try:
        async for chunk in resp.aiter_bytes():
            out: list[NdjsonLine] = []
            start, size = 0, len(chunk)
            while start < size:
                nl = chunk.find(b"\n", start)
                end = size if nl < 0 else nl
                if over:
                    over += end - start
                    if len(buf) < _PREVIEW:
                        buf += chunk[start : min(end, start + _PREVIEW - len(buf))]
                elif len(buf) + end - start > max_line:
                    over = len(buf) + end - start
                    buf += chunk[start : min(end, start + max(0, _PREVIEW - len(buf)))]  # a preview only
                    del buf[_PREVIEW:]
                elif nl >= 0 and not buf:  # the common case: a whole line inside this chunk
                    number += 1
                    piece = chunk[start:nl].rstrip(b"\r")
                    if piece and not piece.isspace():
                        out.append(_line(piece, file, number))
                    start = nl + 1
                    continue
                else:
                    buf += chunk[start:end]
                if nl < 0:
                    break
                number += 1
                if over:
                    out.append(_line(bytes(buf), file, number, _too_long(over, max_line)))
                elif buf and not buf.isspace():
                    out.append(_line(bytes(buf.rstrip(b"\r")), file, number))
                buf.clear()
                over = 0
                start = nl + 1
            if out:
                yield out
    except httpx.HTTPError as exc:  # cut mid-body: transient, resume from the checkpoint
        raise UpstreamError(
            mask(f"download of {file.url} broke off after line {number}: {type(exc).__name__}: {exc}")
        ) from exc
    if over:
        yield [_line(bytes(buf), file, number + 1, _too_long(over, max_line))]
    elif buf and not buf.isspace():
        yield [_line(bytes(buf), file, number + 1, unterminated=True)]
