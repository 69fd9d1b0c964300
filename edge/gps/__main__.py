"""python -m edge.gps replay FILE | read PORT [--baud N]: print one JSON object per fix."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from smartcity.contracts.envelope import format_ts

from . import NmeaPipeline
from .fix import Fix

log = logging.getLogger("edge.gps")


def fix_json(fix: Fix) -> str:
    d = {"ts": format_ts(fix.ts) if fix.ts is not None else None}
    d.update(fix.to_fields())
    return json.dumps(d, separators=(",", ":"))


def replay(path: str, out=sys.stdout) -> dict:
    p = NmeaPipeline()
    with open(path, "rb") as f:
        while chunk := f.read(65536):
            for fix in p.feed(chunk):
                out.write(fix_json(fix) + "\n")
    for fix in p.flush():
        out.write(fix_json(fix) + "\n")
    return {**p.framer.rejected, "comments": p.framer.comments, **p.decoder.counters(),
            "fixes": p.builder.fixes}


def read(port: str, baud: int) -> None:
    from .reader import GpsReader

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def on_fix(fix: Fix) -> None:
        print(fix_json(fix), flush=True)

    r = GpsReader(port, baud, on_fix)
    r.run(stop)
    log.info("gps reader stopped: %s", r.stats.as_dict())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge.gps", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true", help="log counters and reasons")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("replay", help="decode a captured NMEA log")
    r.add_argument("file")
    rd = sub.add_parser("read", help="print fixes live from a serial port")
    rd.add_argument("port")
    rd.add_argument("--baud", type=int, default=9600)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.cmd == "replay":
        try:
            stats = replay(args.file)
        except OSError as e:
            # a replay never fails on content; an unreadable file is reported, not raised
            log.error("cannot read %s: %s", args.file, e)
            return 0
        except Exception:  # a parser bug: report it, keep the fixes printed so far
            log.exception("replay of %s aborted", args.file)
            return 0
        log.info("replay %s: %s", args.file, stats)
        return 0
    read(args.port, args.baud)
    return 0


if __name__ == "__main__":
    sys.exit(main())
