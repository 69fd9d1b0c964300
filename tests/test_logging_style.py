"""One logging style (docs/architecture.md, runtime/obs.py): a short constant message, the values
as fields in `extra=` (JSON keys in the service's log, key=value in the text form). No %-arguments,
no f-string or otherwise computed message, and no field named like a LogRecord attribute (logging
raises KeyError for `extra={"thread": ...}` at the moment the line is written)."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("contracts", "runtime", "catalog", "sim", "edge", "bridge", "spark_jobs", "warehouse", "deploy", "bench",
           "tests/support")
METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical"}
RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def log_calls():
    """(file:line, call) for every logger.<level>(...) call: a receiver whose name has "log" in it."""
    for folder in FOLDERS:
        for f in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in METHODS):
                    continue
                recv = node.func.value
                name = recv.id if isinstance(recv, ast.Name) else getattr(recv, "attr", "")
                if "log" in name.lower():
                    yield f"{f.relative_to(ROOT)}:{node.lineno}", node


def test_messages_are_constant_and_values_go_in_extra():
    bad = [f"{where}: {ast.unparse(call)[:100]}" for where, call in log_calls()
           if len(call.args) != 1 or not isinstance(call.args[0], ast.Constant)]
    assert not bad, "\n".join(bad)


def test_no_field_overwrites_a_log_record_attribute():
    bad = []
    for where, call in log_calls():
        for kw in call.keywords:
            if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                bad += [f"{where}: {k.value}" for k in kw.value.keys
                        if isinstance(k, ast.Constant) and k.value in RESERVED]
    assert not bad, bad


def test_the_scan_sees_calls():
    assert sum(1 for _ in log_calls()) > 50
