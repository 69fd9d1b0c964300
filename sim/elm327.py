"""An ELM327 adapter plus a car's ECU, answering on a pseudo-terminal.

The real driver (edge.obd) opens the slave side with pyserial; a thread here reads commands
from the master side and answers them like an ELM327 v1.5 with headers off: echo on until ATE0,
`SEARCHING...` on the first OBD request after ATSP0, ISO-TP multi-frame VIN on CAN or the five
`49 02 nn` lines of the legacy protocols, supported-PID bitmaps built from the PIDs it answers.

Faults for tests: unsupported PIDs (NO DATA), a queued one-shot reply (`CAN ERROR`, `?`, ...),
ignition off (ECU silent, battery at rest), silence (no prompt), drop() (adapter unplugged:
pty closed, link removed) and replug() (a new pty behind the same link path).
"""
from __future__ import annotations

import logging
import os
import select
import threading
import time
import tty
from typing import Callable

log = logging.getLogger(__name__)

DEFAULT_VIN = "1HGCM82633A004352"
BANNER = "ELM327 v1.5"

# PID -> (field, encoder to data bytes). The inverse of edge.obd.pids' J1979 formulas.
def _u8(x: float) -> bytes:
    return bytes([max(0, min(255, int(round(x))))])


def _u16(x: float) -> bytes:
    return max(0, min(65535, int(round(x)))).to_bytes(2, "big")


ENCODERS: dict[int, tuple[str, Callable[[float], bytes]]] = {
    0x04: ("engine_load_pct", lambda v: _u8(v * 255 / 100)),
    0x05: ("coolant_c", lambda v: _u8(v + 40)),
    0x0C: ("rpm", lambda v: _u16(v * 4)),
    0x0D: ("speed_kmh", _u8),
    0x11: ("throttle_pct", lambda v: _u8(v * 255 / 100)),
    0x2F: ("fuel_level_pct", lambda v: _u8(v * 255 / 100)),
    0x42: ("battery_v", lambda v: _u16(v * 1000)),
}
PROTOCOL_NAMES = {"can": "ISO 15765-4 (CAN 11/500)", "legacy": "ISO 9141-2"}


def bitmap(base: int, pids: set[int]) -> bytes:
    """The 4-byte answer to PID `base` (00/20/40) for the given set of supported PIDs."""
    bits = 0
    for p in pids:
        if base < p <= base + 0x20:
            bits |= 1 << (32 - (p - base))
    return bits.to_bytes(4, "big")


class Elm327Emulator:
    def __init__(self, values: Callable[[], dict], vin: str = DEFAULT_VIN,
                 protocol: str = "can", unsupported: set[int] | tuple = (),
                 link: str | None = None, vin_filler: bool = False,
                 reply_delay_s: float = 0.0):
        if protocol not in PROTOCOL_NAMES:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOL_NAMES)}, not {protocol!r}")
        self.values = values
        self.vin = vin
        self.protocol = protocol
        self.unsupported = set(unsupported)
        self.link = link
        self.vin_filler = vin_filler       # CAN: pad the VIN with leading 00s like some ECUs
        self.reply_delay_s = reply_delay_s  # bus + ECU time per OBD request (real: ~20-60 ms)
        self.ignition_on = True
        self.rest_battery_v = 12.3
        self.silent = False
        self.commands: list[tuple[float, str]] = []   # (monotonic, command) as received
        self._overrides: list[str] = []
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.path: str | None = None
        self._reset_state()

    # -- lifecycle -------------------------------------------------------------------------------
    def _reset_state(self) -> None:
        self.echo, self.linefeeds, self.spaces, self.headers = True, False, True, False
        self.searched = False

    def start(self) -> str:
        """Open a pty and answer on it; returns the path to give pyserial (the link if set)."""
        self._stop.clear()
        master, slave = os.openpty()
        tty.setraw(slave)    # no line discipline between driver and emulator: bytes as sent
        tty.setraw(master)
        self._master, self._slave = master, slave
        dev = os.ttyname(slave)
        if self.link:
            tmp = f"{self.link}.tmp{os.getpid()}"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(dev, tmp)
            os.replace(tmp, self.link)   # atomic repoint: a reader never sees a half-made link
        self.path = self.link or dev
        self._reset_state()
        self._thread = threading.Thread(target=self._run, args=(master,), name="elm327-emu",
                                        daemon=True)
        self._thread.start()
        return self.path

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
            self._thread = None
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    def drop(self) -> None:
        """Unplug: the pty goes away (the driver's reads fail) and so does the link."""
        self.stop()
        if self.link and os.path.lexists(self.link):
            os.unlink(self.link)

    def replug(self) -> str:
        """Plug back in: a fresh adapter (echo on, not searched) on a new pty, same link."""
        self.stop()
        return self.start()

    # -- fault injection ------------------------------------------------------------------------
    def inject(self, reply: str, times: int = 1) -> None:
        """The next `times` OBD requests get `reply` (e.g. 'CAN ERROR') instead of data."""
        with self._lock:
            self._overrides.extend([reply] * times)

    def set_ignition(self, on: bool) -> None:
        self.ignition_on = on

    def set_silent(self, silent: bool) -> None:
        self.silent = silent

    def received(self, command: str) -> list[float]:
        return [t for t, c in list(self.commands) if c == command]

    # -- the adapter ----------------------------------------------------------------------------
    def _run(self, master: int) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([master], [], [], 0.05)
                if not r:
                    continue
                data = os.read(master, 1024)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\r" in buf:
                line, buf = buf.split(b"\r", 1)
                cmd = line.decode("ascii", "replace").strip()
                self.commands.append((time.monotonic(), cmd.upper().replace(" ", "")))
                out = self._answer(cmd)
                if out is None:
                    continue
                try:
                    os.write(master, out)
                except OSError:
                    return

    def _answer(self, cmd: str) -> bytes | None:
        if self.silent:
            return None
        eol = "\r\n" if self.linefeeds else "\r"
        echo = cmd + eol if self.echo else ""
        c = cmd.upper().replace(" ", "")
        try:
            lines = self._lines(c)
        except Exception:  # e.g. values() failing: the adapter keeps answering, like a car would
            log.exception("elm327 emulator: cannot answer", extra={"command": cmd})
            lines = ["NO DATA"]
        if self.reply_delay_s and not c.startswith("AT"):
            time.sleep(self.reply_delay_s)
        return (echo + eol.join(lines) + eol + eol + ">").encode("ascii")

    def _lines(self, c: str) -> list[str]:
        if c.startswith("AT"):
            return self._at(c[2:])
        if not c or any(ch not in "0123456789ABCDEF" for ch in c) or len(c) % 2:
            return ["?"]
        with self._lock:
            override = self._overrides.pop(0) if self._overrides else None
        if override is not None:
            return override.split("\r")
        prefix = []
        if not self.searched:
            prefix = ["SEARCHING..."]
            if not self.ignition_on:
                return prefix + ["UNABLE TO CONNECT"]
            self.searched = True
        if not self.ignition_on:
            return prefix + ["NO DATA"]
        return prefix + self._obd(bytes.fromhex(c))

    def _at(self, a: str) -> list[str]:
        if a == "Z":
            self._reset_state()
            return ["", BANNER]
        if a in ("I",):
            return [BANNER]
        if a == "RV":
            v = self.values().get("battery_v") if self.ignition_on else self.rest_battery_v
            return [f"{(v or 0):.1f}V"]
        if a == "DP":
            return ["AUTO, " + PROTOCOL_NAMES[self.protocol]]
        flags = {"E0": ("echo", False), "E1": ("echo", True), "L0": ("linefeeds", False),
                 "L1": ("linefeeds", True), "S0": ("spaces", False), "S1": ("spaces", True),
                 "H0": ("headers", False), "H1": ("headers", True)}
        if a in flags:
            name, val = flags[a]
            setattr(self, name, val)
            return ["OK"]
        if a.startswith("SP"):
            self.searched = False
            return ["OK"]
        return ["OK"]   # every other AT setting is accepted and has no effect here

    def _hex(self, b: bytes) -> str:
        return (" " if self.spaces else "").join(f"{x:02X}" for x in b)

    def _supported(self) -> set[int]:
        answered = {p for p in ENCODERS if p not in self.unsupported}
        # the chain bits: 0x20 says "ask 0120", 0x40 says "ask 0140"
        if any(p > 0x20 for p in answered):
            answered.add(0x20)
        if any(p > 0x40 for p in answered):
            answered.add(0x40)
        return answered

    def _obd(self, req: bytes) -> list[str]:
        mode, pids = req[0], req[1:]
        if mode == 0x01 and len(pids) == 1:
            pid = pids[0]
            sup = self._supported()
            if pid in (0x00, 0x20, 0x40) and (pid == 0 or pid in sup):
                return [self._hex(bytes([0x41, pid]) + bitmap(pid, sup))]
            if pid in ENCODERS and pid in sup:
                field, enc = ENCODERS[pid]
                value = self.values().get(field)
                if value is None:
                    return ["NO DATA"]
                return [self._hex(bytes([0x41, pid]) + enc(value))]
            return ["NO DATA"]
        if mode == 0x09 and pids == b"\x02" and self.vin:
            return self._vin_lines()
        if mode == 0x09 and pids == b"\x00":
            return [self._hex(bytes([0x49, 0x00]) + bitmap(0, {0x02} if self.vin else set()))]
        return ["NO DATA"]

    def _vin_lines(self) -> list[str]:
        vin = self.vin.encode("ascii")
        if self.protocol == "legacy":
            data = b"\x00" * (20 - len(vin)) + vin     # 5 x 4 bytes, leading 00 filler
            return [self._hex(bytes([0x49, 0x02, i + 1]) + data[4 * i:4 * i + 4])
                    for i in range(5)]
        if self.vin_filler:
            vin = b"\x00\x00\x00" + vin
        payload = bytes([0x49, 0x02, 0x01]) + vin
        frames = [payload[:6]] + [payload[i:i + 7] for i in range(6, len(payload), 7)]
        frames[-1] = frames[-1] + b"\x00" * (7 - len(frames[-1]) if len(frames) > 1 else 0)
        sep = ": " if self.spaces else ":"
        lines = [f"{len(payload):03X}"]
        lines += [f"{i % 16:X}{sep}{self._hex(f)}" for i, f in enumerate(frames)]
        return lines
