"""OBD-II command table and pure decoders (SAE J1979 formulas). No I/O here.

A decoder gets the assembled ECU messages of one reply (bytes with the mode+0x40 and PID
echoed at the front, as the ELM327 shows them with headers off) and returns a value in the unit
its field name carries, or raises DecodeError.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence


class DecodeError(ValueError):
    """A reply that arrived but does not decode (wrong PID, too short, bad VIN)."""
    kind = "decode"


@dataclass(frozen=True)
class Pid:
    mode: int
    pid: int
    field: str            # vehicle_data field it fills ("" for bitmaps)
    nbytes: int           # data bytes after mode and PID
    decode: Callable[[bytes], float]
    description: str

    @property
    def command(self) -> str:
        return f"{self.mode:02X}{self.pid:02X}"


def _pct(d: bytes) -> float:
    return round(d[0] * 100.0 / 255.0, 2)


def _coolant_c(d: bytes) -> float:
    return float(d[0] - 40)


def _rpm(d: bytes) -> float:
    return (d[0] * 256 + d[1]) / 4.0


def _speed_kmh(d: bytes) -> float:
    return float(d[0])


def _module_v(d: bytes) -> float:
    return round((d[0] * 256 + d[1]) / 1000.0, 3)


def _bitmap(d: bytes) -> float:  # not a measurement; see supported_pids()
    return float(int.from_bytes(d[:4], "big"))


# PIDs that report which PIDs exist: 00 covers 01-20, 20 covers 21-40, 40 covers 41-60.
SUPPORT_PIDS = (0x00, 0x20, 0x40)
BITMAPS = {p: Pid(0x01, p, "", 4, _bitmap, f"PIDs supported {p + 1:02X}-{p + 0x20:02X}")
           for p in SUPPORT_PIDS}

# Mode 01 PIDs read every cycle, in polling order (fast-changing first).
MODE01: dict[int, Pid] = {p.pid: p for p in (
    Pid(0x01, 0x0D, "speed_kmh", 1, _speed_kmh, "Vehicle speed, km/h"),
    Pid(0x01, 0x0C, "rpm", 2, _rpm, "Engine speed, rev/min"),
    Pid(0x01, 0x11, "throttle_pct", 1, _pct, "Absolute throttle position, %"),
    Pid(0x01, 0x04, "engine_load_pct", 1, _pct, "Calculated engine load, %"),
    Pid(0x01, 0x05, "coolant_c", 1, _coolant_c, "Engine coolant temperature, degC"),
    Pid(0x01, 0x2F, "fuel_level_pct", 1, _pct, "Fuel tank level input, %"),
    Pid(0x01, 0x42, "battery_v", 2, _module_v, "Control module voltage, V"),
)}

VIN_COMMAND = "0902"
VIN_LEN = 17
# ISO 3779: 17 characters, no I, O or Q (the contract's pattern).
VIN_RE = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")

FIELDS = ("speed_kmh", "rpm", "coolant_c", "throttle_pct", "engine_load_pct",
          "fuel_level_pct", "battery_v", "vin")


def pid_data(pid: Pid, messages: Sequence[bytes]) -> bytes:
    """The data bytes answering `pid`: the first message that starts with mode+0x40, PID.

    Several ECUs may answer one request (engine and gearbox both report speed); with headers
    off they cannot be told apart, and J1979 requires them to agree, so the first one wins.
    """
    want = bytes((pid.mode + 0x40, pid.pid))
    for m in messages:
        if m[:2] == want:
            data = m[2:]
            if len(data) < pid.nbytes:
                raise DecodeError(f"{pid.command}: {len(data)} data bytes, need {pid.nbytes}: "
                                  f"{m.hex(' ').upper()}")
            return data[:pid.nbytes]
    shown = " | ".join(m.hex(" ").upper() for m in messages) or "nothing"
    raise DecodeError(f"{pid.command}: no message starts with {want.hex(' ').upper()} (got {shown})")


def decode(pid: Pid, messages: Sequence[bytes]) -> float:
    return pid.decode(pid_data(pid, messages))


def supported_pids(base: int, messages: Iterable[bytes]) -> set[int]:
    """PIDs announced by the bitmap reply to PID `base` (00, 20, 40), ORed over all ECUs.

    Bit 31 of the 4-byte bitmap is PID base+1, bit 0 is PID base+0x20 (which, when set, says the
    next bitmap PID exists).
    """
    want = bytes((0x41, base))
    out: set[int] = set()
    found = False
    for m in messages:
        if m[:2] != want:
            continue
        if len(m) < 6:
            raise DecodeError(f"01{base:02X}: bitmap has {len(m) - 2} bytes, need 4")
        found = True
        bits = int.from_bytes(m[2:6], "big")
        out |= {base + i for i in range(1, 33) if bits & (1 << (32 - i))}
    if not found:
        raise DecodeError(f"01{base:02X}: no bitmap in reply")
    return out


def decode_vin(messages: Sequence[bytes]) -> str:
    """The 17-character VIN from a mode 09 PID 02 reply, in either shape the ELM327 gives.

    CAN (ISO 15765-4): one ISO-TP message `49 02 01` + 17 bytes (01 = number of data items).
    Legacy (J1850, ISO 9141, KWP2000): five messages `49 02 nn` + 4 bytes, nn = 1..5, 20 bytes
    whose first three are 00 filler. Some ECUs pad with 00 (or spaces) at either end instead;
    filler is stripped, and what is left must be exactly a valid VIN, never a truncated one.
    """
    parts = [m for m in messages if m[:2] == b"\x49\x02" and len(m) > 3]
    if not parts:
        shown = " | ".join(m.hex(" ").upper() for m in messages) or "nothing"
        raise DecodeError(f"0902: no VIN message (got {shown})")
    if len(parts) == 1 and len(parts[0]) > 7:
        raw = parts[0][3:]
    else:
        by_seq: dict[int, bytes] = {}
        for m in parts:
            by_seq.setdefault(m[2], m[3:])
        seqs = sorted(by_seq)
        if seqs != list(range(1, len(seqs) + 1)):
            raise DecodeError(f"0902: VIN message numbers {seqs} are not 1..{len(seqs)}")
        raw = b"".join(by_seq[s] for s in seqs)
    text = raw.strip(b"\x00\xff ").decode("ascii", "replace")
    if not VIN_RE.fullmatch(text):
        raise DecodeError(f"0902: not a 17-character VIN: {text!r} (raw {raw.hex(' ').upper()})")
    return text
