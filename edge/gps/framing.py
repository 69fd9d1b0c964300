"""Cut a raw serial byte stream into candidate NMEA sentence lines.

Pure and incremental: `feed()` may be called with any slice of the stream (one byte, half a
sentence, ten sentences); a sentence split across reads comes out whole once its terminator
arrives. Nothing here checks checksums or fields: that is the decoder's job.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# gpsd rejects NMEA sentences longer than this (the standard says 82, real receivers such as
# Skytraq and u-blox high-precision mode exceed it; gpsd's NMEA_MAX is the practical limit).
MAX_SENTENCE_LEN = 130
# Bytes kept while waiting for a line terminator; more than this without CR/LF is binary noise
# (or a receiver in a binary protocol) and is dropped so memory stays bounded.
MAX_PENDING = 1024

_PRINTABLE = bytes(range(0x20, 0x7F))


class NmeaFramer:
    """Incremental line framer.

    Accepts CR, LF, CRLF and LFCR terminators (empty lines between terminators are ignored),
    strips NUL padding, resynchronises on the last `$`/`!` in a line (a sentence truncated by a
    dropped byte and followed by a whole one yields the whole one), skips `#` comment lines of
    captured logs and rejects over-long or non-printable lines. Every rejection is counted by
    reason in `rejected`.
    """

    __slots__ = ("_buf", "rejected", "comments", "lines")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.rejected: dict[str, int] = {
            "garbage": 0,      # line without a sentence start, or non-printable bytes
            "too_long": 0,     # longer than MAX_SENTENCE_LEN
            "overflow": 0,     # MAX_PENDING bytes without a terminator
            "prefix_noise": 0,  # bytes before the `$` of an otherwise usable sentence
        }
        self.comments = 0
        self.lines = 0

    def feed(self, data: bytes) -> list[str]:
        if not data:
            return []
        # NUL padding is common on idle UARTs and in captures; XOR with 0 leaves an NMEA checksum
        # unchanged, so removing NULs never makes a bad sentence look good. CR and LF are both
        # terminators in any order, and empty lines are skipped, so CR becomes LF.
        data = data.replace(b"\x00", b"").replace(b"\r", b"\n")
        buf = self._buf
        if b"\n" not in data:
            buf += data
            if len(buf) > MAX_PENDING:
                self._overflow()
            return []
        buf += data
        parts = buf.split(b"\n")
        self._buf = bytearray(parts.pop())
        out: list[str] = []
        for raw in parts:
            if raw:
                line = self._line(raw)
                if line is not None:
                    out.append(line)
        if len(self._buf) > MAX_PENDING:
            self._overflow()
        return out

    def _overflow(self) -> None:
        buf = self._buf
        self.rejected["overflow"] += 1
        log.debug("gps framer: bytes without terminator dropped", extra={"bytes": len(buf)})
        # keep a possible sentence start so a sentence beginning in the tail survives
        cut = max(buf.rfind(b"$"), buf.rfind(b"!"))
        if cut > 0 and len(buf) - cut <= MAX_SENTENCE_LEN:
            del buf[:cut]
        else:
            buf.clear()

    def reset(self) -> None:
        """Forget a partial line (the port was closed; its continuation will never come)."""
        self._buf.clear()

    def flush(self) -> list[str]:
        """End of stream: treat pending bytes as a final unterminated line."""
        if not self._buf:
            return []
        line = self._line(bytes(self._buf)) if self._buf.strip() else None
        self._buf.clear()
        return [line] if line is not None else []

    def _line(self, raw: bytes) -> str | None:
        self.lines += 1
        if raw[0] == 0x23:  # '#': comment in a captured log
            self.comments += 1
            return None
        d = raw.rfind(b"$")
        x = raw.rfind(b"!")
        if x > d:
            d = x
        if d < 0:
            if raw.strip():
                self.rejected["garbage"] += 1
            return None
        if d > 0:
            self.rejected["prefix_noise"] += 1
            raw = raw[d:]
        raw = raw.rstrip(b" \t")
        if len(raw) > MAX_SENTENCE_LEN:
            self.rejected["too_long"] += 1
            return None
        if raw.translate(None, _PRINTABLE):
            self.rejected["garbage"] += 1
            return None
        return raw.decode("ascii")
