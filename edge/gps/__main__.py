"""python -m edge.gps replay FILE | read PORT [--baud N]: print one JSON object per fix."""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading

from smartcity.contracts.envelope import format_ts
from smartcity.runtime.cli import ArgumentParser, UsageError, cli
from smartcity.runtime.obs import configure_logging

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
    log.info("gps reader stopped", extra={"stats": r.stats.as_dict()})


@cli("python -m edge.gps")
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m edge.gps", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true", help="log counters and reasons")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("replay", help="decode a captured NMEA log")
    r.add_argument("file")
    rd = sub.add_parser("read", help="print fixes live from a serial port")
    rd.add_argument("port")
    rd.add_argument("--baud", type=int, default=9600)
    args = ap.parse_args(argv)
    configure_logging(logging.INFO if args.verbose else logging.WARNING, json=False)
    if args.cmd == "replay":
        try:
            stats = replay(args.file)
        except OSError as e:
            # a replay never fails on content; a file that cannot be read is a usage error
            raise UsageError(f"cannot read {args.file}: {e.strerror}") from None
        except Exception:  # a parser bug: report it, keep the fixes printed so far
            log.exception("replay aborted", extra={"file": args.file})
            return 0
        log.info("replay done", extra={"file": args.file, "stats": stats})
        return 0
    read(args.port, args.baud)
    return 0


if __name__ == "__main__":
    sys.exit(main())
