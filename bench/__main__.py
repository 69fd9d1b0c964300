"""python -m bench NAME [args...]: run one benchmark; its last output line is one JSON object."""
from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m bench NAME [args]   (NAME in {available()})", file=sys.stderr)
        return 2
    name, args = argv[0], argv[1:]
    if name not in available():
        print(f"unknown benchmark {name!r}; available: {available()}", file=sys.stderr)
        return 2
    result = importlib.import_module(f"bench.{name}").run(args)
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
