"""ELM327 transport: prompt framing and reply parsing (pure), and a small pyserial client.

Headers stay off (ATH0). With headers on every line would carry a protocol-specific header
(11-bit `7E8`, 29-bit `18 DA F1 10`, J1850/ISO `48 6B 10` plus a checksum byte) that this driver
would have to strip per protocol, for one benefit: telling apart ECUs that answer the same
request. J1979 makes ECUs agree on the PIDs read here (supported bitmaps are ORed over ECUs),
and with headers off the ELM327 still frames ISO-TP multi-frame replies (`014` / `0:` / `1:`),
so the VIN is assembled without them. Cost: two ECUs sending multi-frame replies to the same
request at once would interleave; the VIN comes from the engine ECU only in practice.
"""
from __future__ import annotations

import logging
import re
import time

try:
    # pyserial's POSIX backend lets termios errors through from tcflush (reset_input_buffer):
    # EIO once the tty has hung up (the adapter unplugged, a pty's other end closed).
    from termios import error as TermiosError
except ImportError:  # no termios (Windows): pyserial raises SerialException there
    TermiosError = OSError

log = logging.getLogger(__name__)

PROMPT = b">"


# --- errors ---------------------------------------------------------------------------------
class ElmError(Exception):
    """The adapter answered, but with an error instead of data. `kind` keys the counters."""
    kind = "elm"

    def __init__(self, message: str, reply: str = ""):
        super().__init__(message)
        self.reply = reply


class NoData(ElmError):
    kind = "no_data"


class Stopped(ElmError):
    kind = "stopped"


class UnknownCommand(ElmError):
    kind = "unknown_command"


class UnableToConnect(ElmError):
    kind = "unable_to_connect"


class CanError(ElmError):
    kind = "can_error"


class BusInitError(ElmError):
    kind = "bus_init"


class BufferFull(ElmError):
    kind = "buffer_full"


class BusError(ElmError):
    kind = "bus_error"


class DataError(ElmError):
    kind = "data_error"


class AdapterReset(ElmError):
    kind = "adapter_reset"


class EmptyReply(ElmError):
    kind = "empty"


class Garbled(ElmError):
    kind = "garbled"


class AdapterError(Exception):
    """The adapter itself cannot be used: the port is gone, or it stopped prompting."""
    kind = "adapter"


class AdapterGone(AdapterError):
    kind = "serial"


class AdapterTimeout(AdapterError):
    kind = "timeout"


class NotAnElm(AdapterError):
    kind = "not_elm"


class AdapterWasReset(AdapterError):
    """The adapter reset itself (LV RESET, ACT ALERT, ERRnn): its settings are gone."""
    kind = "adapter_reset"


# Whole-line replies that mean "no data, and why". Checked in this order, on the upper-cased
# line with spaces removed (ATS0 also squeezes the adapter's own messages on some clones).
_ERROR_LINES: tuple[tuple[str, type[ElmError], str], ...] = (
    ("NODATA", NoData, "no ECU answered (NO DATA)"),
    ("STOPPED", Stopped, "command interrupted (STOPPED): a character arrived while it ran"),
    ("?", UnknownCommand, "adapter did not understand the command (?)"),
    ("UNABLETOCONNECT", UnableToConnect,
     "no OBD protocol found (UNABLE TO CONNECT): ignition off or no ECU"),
    ("CANERROR", CanError, "CAN bus error (CAN ERROR): wrong bit rate, wiring or bus off"),
    ("BUFFERFULL", BufferFull, "adapter receive buffer overflowed (BUFFER FULL)"),
    ("BUSBUSY", BusError, "bus too busy to send (BUS BUSY)"),
    ("BUSERROR", BusError, "bus error (BUS ERROR)"),
    ("FBERROR", BusError, "feedback error (FB ERROR)"),
    ("LVRESET", AdapterReset, "adapter reset on low voltage (LV RESET)"),
    ("ACTALERT", AdapterReset, "adapter idled on no activity (ACT ALERT)"),
)
_INFO_RE = re.compile(r"^(SEARCHING\.*|BUSINIT:?\.*(OK)?)$")
_BUS_INIT_ERR_RE = re.compile(r"^BUSINIT:?\.*ERROR$")
_ERR_NN_RE = re.compile(r"^ERR\d\d$")
_HEX_RE = re.compile(r"^[0-9A-F]+$")
_FRAME_RE = re.compile(r"^([0-9A-F]):([0-9A-F]*)$")
_LEN_RE = re.compile(r"^[0-9A-F]{3}$")


# --- framing (pure) ---------------------------------------------------------------------------
def split_prompts(buf: bytes) -> tuple[list[str], bytes]:
    """Cut a byte stream at each `>` prompt: (complete replies, unterminated rest).

    NUL bytes are dropped: some adapters emit them around resets.
    """
    parts = buf.replace(b"\x00", b"").split(PROMPT)
    rest = parts.pop()
    return [p.decode("ascii", "replace") for p in parts], rest


def reply_lines(text: str, command: str | None = None) -> list[str]:
    """Non-empty lines of a reply, without the echoed command (echo is on until ATE0)."""
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", text)]
    lines = [ln for ln in lines if ln]
    if command and lines and lines[0].replace(" ", "").upper() == command.replace(" ", "").upper():
        lines = lines[1:]
    return lines


def _squeeze(line: str) -> str:
    return line.replace(" ", "").upper()


def check_errors(lines: list[str], reply: str) -> list[str]:
    """Raise the typed error a reply reports; return its lines minus progress messages."""
    out = []
    for ln in lines:
        sq = _squeeze(ln)
        if _INFO_RE.match(sq):
            continue  # SEARCHING... / BUS INIT: ...OK precede the data
        if _BUS_INIT_ERR_RE.match(sq) or sq.startswith("BUSINIT") and "ERROR" in sq:
            raise BusInitError("slow bus init failed (BUS INIT: ...ERROR): ignition off or "
                               "no ISO 9141/KWP ECU", reply)
        for token, cls, msg in _ERROR_LINES:
            if sq == token:
                raise cls(msg, reply)
        if _ERR_NN_RE.match(sq):
            raise AdapterReset(f"adapter internal error ({ln})", reply)
        if sq.startswith("<DATAERROR") or sq == "DATAERROR" or sq.endswith("<DATAERROR"):
            raise DataError(f"reply failed its checksum or was malformed ({ln})", reply)
        if "RXERROR" in sq:
            raise DataError(f"receive error ({ln})", reply)
        out.append(ln)
    if not out:
        raise EmptyReply("adapter returned an empty reply", reply)
    return out


def assemble(lines: list[str], reply: str = "") -> list[bytes]:
    """Data lines (headers off) -> ECU messages.

    A single-frame reply is one line per ECU message. An ISO-TP multi-frame reply is a length
    line (`014`, hex byte count) followed by `0:` .. `F:` frames (the index wraps after F); the
    frames are joined in order and cut to the length, which drops the padding of the last frame.
    """
    msgs: list[bytes] = []
    i = 0
    while i < len(lines):
        sq = _squeeze(lines[i])
        if _LEN_RE.match(sq) and i + 1 < len(lines) and _FRAME_RE.match(_squeeze(lines[i + 1])):
            total = int(sq, 16)
            data = bytearray()
            expect = 0
            i += 1
            while i < len(lines) and (m := _FRAME_RE.match(_squeeze(lines[i]))):
                idx = int(m.group(1), 16)
                if idx != expect:
                    raise Garbled(f"multi-frame reply: frame {idx:X} where {expect:X} was due",
                                  reply)
                data += _hex(m.group(2), reply)
                expect = (expect + 1) % 16
                i += 1
            if len(data) < total:
                raise Garbled(f"multi-frame reply: {len(data)} of {total} bytes arrived", reply)
            msgs.append(bytes(data[:total]))
            continue
        msgs.append(_hex(sq, reply))
        i += 1
    return msgs


def _hex(sq: str, reply: str) -> bytes:
    if not _HEX_RE.match(sq) or len(sq) % 2:
        raise Garbled(f"not a hex data line: {sq!r}", reply)
    return bytes.fromhex(sq)


def parse_reply(text: str, command: str | None = None) -> list[bytes]:
    """A reply (text before the prompt) -> ECU messages, or the typed ElmError it reports."""
    return assemble(check_errors(reply_lines(text, command), text), text)


# --- I/O ------------------------------------------------------------------------------------
class Elm327:
    """One ELM327 on a serial port: send a command, wait for the `>` prompt, parse."""

    def __init__(self, port: str, baud: int = 38400, timeout_s: float = 2.0,
                 reset_timeout_s: float = 5.0, search_timeout_s: float = 15.0):
        self.port, self.baud = port, baud
        self.timeout_s = timeout_s
        self.reset_timeout_s = reset_timeout_s     # ATZ reboots the chip: ~1 s on real ones
        self.search_timeout_s = search_timeout_s   # SEARCHING... walks protocols: up to ~10 s
        self.ser = None
        self.banner = ""
        self.searched = False
        self._rest = b""

    def open(self) -> None:
        import serial  # only the I/O half needs pyserial

        try:
            self.ser = serial.Serial(self.port, self.baud, timeout=0.05, write_timeout=1.0)
        except (serial.SerialException, OSError, ValueError) as e:
            raise AdapterGone(f"cannot open OBD adapter port {self.port}: {e}") from e

    def close(self) -> None:
        ser, self.ser = self.ser, None
        if ser is not None:
            try:
                ser.close()
            except Exception:  # a vanished device may fail to close; it is gone either way
                pass

    @property
    def is_open(self) -> bool:
        return self.ser is not None

    def send(self, command: str, timeout_s: float | None = None) -> str:
        """Write `command`\\r and return the raw reply text up to the prompt."""
        import serial

        if self.ser is None:
            raise AdapterGone(f"OBD adapter port {self.port} is not open")
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            # A late reply to an earlier, timed-out command must not pass for this one's.
            self.ser.reset_input_buffer()
            self._rest = b""
            self.ser.write(command.encode("ascii") + b"\r")
            deadline = time.monotonic() + timeout_s
            buf = b""
            while True:
                chunk = self.ser.read(self.ser.in_waiting or 1)
                if chunk:
                    buf += chunk
                    replies, rest = split_prompts(buf)
                    if replies:
                        self._rest = rest
                        log.debug("elm327 reply", extra={"command": command, "reply": replies[0]})
                        return replies[0]
                if time.monotonic() >= deadline:
                    raise AdapterTimeout(f"no prompt from OBD adapter within {timeout_s:.1f} s "
                                         f"after {command!r} (got {buf[-60:]!r})")
        except (serial.SerialException, OSError, TermiosError) as e:
            raise AdapterGone(f"OBD adapter on {self.port} lost: {e}") from e

    def command(self, command: str, timeout_s: float | None = None) -> list[bytes]:
        return parse_reply(self.send(command, timeout_s), command)

    def at(self, command: str, timeout_s: float | None = None) -> str:
        """An AT command; returns its answer text (OK, a version, a voltage)."""
        lines = check_errors(reply_lines(self.send(command, timeout_s), command), command)
        return " ".join(lines)

    def initialise(self) -> str:
        """Reset and configure; returns the ATZ banner. Raises NotAnElm if it is not an ELM."""
        banner = self.at("ATZ", self.reset_timeout_s)
        if "ELM" not in banner.upper():
            raise NotAnElm(f"device on {self.port} answered ATZ with {banner!r}, not an ELM327 "
                           "banner")
        self.banner = banner
        for cmd in ("ATE0", "ATL0", "ATS0", "ATH0", "ATSP0"):
            answer = self.at(cmd)
            if "OK" not in answer.upper():
                raise NotAnElm(f"{cmd} answered {answer!r} instead of OK on {self.port}")
        self.searched = False
        return banner

    def query(self, command: str) -> list[bytes]:
        """An OBD request. The first after ATSP0 may spend seconds in SEARCHING..."""
        timeout_s = self.timeout_s if self.searched else max(self.timeout_s, self.search_timeout_s)
        msgs = self.command(command, timeout_s)
        self.searched = True
        return msgs

    def voltage(self) -> float:
        """ATRV: the adapter's own reading of OBD pin 16 (battery), answered without the ECU."""
        text = self.at("ATRV")
        m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*V?\s*$", text, re.I)
        if not m:
            raise Garbled(f"ATRV answered {text!r}, not a voltage", text)
        return float(m.group(1))
