"""python -m edge.obd probe PORT [--baud N]: connect, read once, print one JSON object."""
from __future__ import annotations

import json
import logging
import sys

from smartcity.runtime.cli import ArgumentParser, UsageError, cli
from smartcity.runtime.obs import configure_logging

from .elm327 import AdapterError
from .reader import ObdReader

log = logging.getLogger("edge.obd")


def probe(port: str, baud: int, timeout_s: float) -> dict:
    r = ObdReader(port, baud, timeout_s, reset_timeout_s=max(timeout_s, 1.0))
    try:
        reading = r.read_once()
    finally:
        r.close()
    log.info("probe done", extra={"stats": r.stats.as_dict()})
    return reading


@cli("python -m edge.obd")
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m edge.obd", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true", help="log the adapter dialogue")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe", help="read every field once and print JSON")
    p.add_argument("port")
    p.add_argument("--baud", type=int, default=38400)
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each prompt (ATZ at least 1 s, the first "
                   "request, which may search protocols, at least 15 s)")
    args = ap.parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.WARNING, json=False)
    try:
        reading = probe(args.port, args.baud, args.timeout)
    except AdapterError as e:
        raise UsageError(f"cannot reach the OBD adapter: {e}") from None
    print(json.dumps(reading, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
