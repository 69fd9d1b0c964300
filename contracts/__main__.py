"""python -m contracts jsonschema [OUTDIR]  — write one JSON Schema file per record type
   python -m contracts docs                 — print the Markdown field tables for docs/contracts.md"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .jsonschema import all_schemas
from .schema import RECORD_TYPES


def markdown() -> str:
    lines = []
    for rt in RECORD_TYPES:
        lines += [f"### `{rt.name}` (MQTT stream `{rt.stream}`)", "", rt.description, "",
                  "| field | type | null | rule | description |", "|---|---|---|---|---|"]
        for f in rt.fields:
            rule = []
            if f.minimum is not None:
                rule.append(f">= {f.minimum:g}")
            if f.maximum is not None:
                rule.append(f"<= {f.maximum:g}")
            if f.enum:
                rule.append("one of " + ", ".join(map(str, f.enum)))
            if f.max_length:
                rule.append(f"len <= {f.max_length}")
            if f.pattern:
                rule.append(f"matches `{f.pattern.replace('|', chr(92) + '|')}`")
            lines.append(f"| `{f.name}` | {f.type} | {'yes' if f.nullable else 'no'} | "
                         f"{'; '.join(rule)} | {f.description} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("jsonschema", "docs"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "docs":
        print(markdown())
        return 0
    out = Path(argv[1] if len(argv) > 1 else "contracts/jsonschema")
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in all_schemas().items():
        (out / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    print(f"wrote {len(all_schemas())} schemas to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
