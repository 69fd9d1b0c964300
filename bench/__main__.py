"""python -m bench NAME [args...]: run one benchmark; its last output line is one JSON object."""
from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

from smartcity.runtime.cli import UsageError, cli


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


@cli("python -m bench")
def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: python -m bench NAME [args]   (NAME in {available()})")
        return 0
    if not argv:
        raise UsageError(f"expected a benchmark NAME [args], NAME in {available()}")
    name, args = argv[0], argv[1:]
    if name not in available():
        raise UsageError(f"unknown benchmark {name!r}; available: {available()}")
    result = importlib.import_module(f"bench.{name}").run(args)
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
