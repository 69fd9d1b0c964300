"""Every command reports a settings or usage mistake the same way (smartcity.runtime.cli): one line
on stderr naming the file, key or argument and what was expected, nothing on stdout, exit 2, no
traceback. Each command is run as a person runs it, in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smartcity.runtime.cli import ArgumentParser, UsageError, cli, one_line
from smartcity.runtime.settings import SettingsError

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PY = [sys.executable, "-m"]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SMARTCITY_")}
    return subprocess.run(cmd, cwd=cwd, env={**environ, **(env or {})}, capture_output=True,
                          text=True, timeout=60)


def assert_one_line(p: subprocess.CompletedProcess, prog: str, *fragments: str) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.splitlines()
    assert p.returncode == 2 and len(lines) == 1, (p.returncode, p.stderr)
    assert p.stdout == ""
    line = lines[0]
    assert line.startswith(prog + ":") or line.startswith(prog + " "), line
    for f in fragments:
        assert f in line, (f, line)
    return line


# The commands with a settings file: a missing file, a wrong-typed key in it, a wrong-typed
# environment variable, a wrong-typed flag. Each TOML holds a string where a number belongs.
SERVICES = {
    "smartcity-edge": ([], "device_id = 5\n", "device_id", "a string", "SMARTCITY_EDGE_MQTT__PORT",
                       "mqtt.port", ["--mqtt-port", "x"]),
    "smartcity-bridge": ([], 'max_payload_bytes = "big"\n', "max_payload_bytes", "an integer",
                         "SMARTCITY_BRIDGE_MQTT__PORT", "mqtt.port", ["--mqtt-port", "x"]),
    "smartcity-lake": (["maintain"], 'trigger_s = "soon"\n', "trigger_s", "a number",
                       "SMARTCITY_LAKE_TRIGGER_S", "trigger_s", ["--every-s", "x"]),
    "smartcity-catalog": (["diff"], "lake = 5\n", "lake", "a string", "SMARTCITY_LAKE_S3__PATH_STYLE",
                          "s3.path_style", ["--format", "xml"]),
    "smartcity-warehouse": (["load"], "schema = 5\n", "schema", "a string", "SMARTCITY_WAREHOUSE_POSTGRES__PORT",
                            "postgres.port", ["--target", "oracle"]),
}


@pytest.mark.parametrize("prog", list(SERVICES))
def test_a_missing_settings_file_is_one_line_and_exit_2(prog, tmp_path):
    sub, *_ = SERVICES[prog]
    missing = tmp_path / "nonexistent.toml"
    p = run([str(BIN / prog), *sub, "--config", str(missing)], tmp_path)
    assert_one_line(p, prog, str(missing), "does not exist")


@pytest.mark.parametrize("prog", list(SERVICES))
def test_a_wrong_typed_key_names_the_file_the_key_and_what_was_expected(prog, tmp_path):
    sub, toml, key, expected, *_ = SERVICES[prog]
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    p = run([str(BIN / prog), *sub, "--config", str(cfg)], tmp_path)
    assert_one_line(p, prog, str(cfg), f"{key}:", f"expected {expected}")


@pytest.mark.parametrize("prog", list(SERVICES))
def test_a_wrong_typed_environment_variable_is_named(prog, tmp_path):
    sub, _, _, _, var, key, _ = SERVICES[prog]
    p = run([str(BIN / prog), *sub], tmp_path, env={var: "abc"})
    assert_one_line(p, prog, var, f"{key}:", "expected")


@pytest.mark.parametrize("prog", list(SERVICES))
def test_a_bad_flag_is_one_line_not_a_usage_block(prog, tmp_path):
    sub, *_, flag = SERVICES[prog]
    p = run([str(BIN / prog), *sub, *flag], tmp_path)
    assert_one_line(p, prog, f"argument {flag[0]}", "--help")


def test_an_unreadable_settings_file_is_one_line(tmp_path):
    p = run([str(BIN / "smartcity-edge"), "--config", str(tmp_path)], tmp_path)   # a folder
    assert_one_line(p, "smartcity-edge", str(tmp_path), "cannot be read")


# The other commands: a usage mistake (a wrong-typed argument, a file that is not there).
OTHERS = [
    ("gps: replay of a missing file", [*PY, "smartcity.edge.gps", "replay", "{tmp}/missing.nmea"],
     None, "python -m edge.gps", ["{tmp}/missing.nmea", "No such file"]),
    ("gps: wrong-typed --baud", [*PY, "smartcity.edge.gps", "read", "/dev/null", "--baud", "fast"],
     None, "python -m edge.gps read", ["argument --baud", "'fast'"]),
    ("obd: wrong-typed --timeout", [*PY, "smartcity.edge.obd", "probe", "/dev/null", "--timeout", "x"],
     None, "python -m edge.obd probe", ["argument --timeout"]),
    ("obd: a port that is not there", [*PY, "smartcity.edge.obd", "probe", "{tmp}/ttyUSB9",
                                      "--timeout", "0.3"],
     None, "python -m edge.obd", ["cannot reach the OBD adapter", "{tmp}/ttyUSB9"]),
    ("contracts: unknown command", [*PY, "smartcity.contracts", "jsonschemas"],
     None, "python -m contracts", ["jsonschema [OUTDIR]"]),
    ("contracts: an output folder that cannot be", [*PY, "smartcity.contracts", "jsonschema",
                                                    "{tmp}/a-file/out"],
     None, "python -m contracts", ["cannot write", "{tmp}/a-file/out"]),
    ("warehouse: a lake folder that is not there", [str(BIN / "smartcity-warehouse"), "load", "--lake",
                                                    "{tmp}/no-lake"], None, "smartcity-warehouse",
     ["lake:", "{tmp}/no-lake", "is not a folder"]),
    ("warehouse: quarantine is never loaded", [str(BIN / "smartcity-warehouse"), "load", "--table", "quarantine"],
     None, "smartcity-warehouse load", ["argument --table", "quarantine is not loaded"]),
    # The lake's default catalog is a SQLite file, which must be on a local disk: an s3a:// lake
    # needs catalog.uri or catalog.type = "glue". Said before any Spark session starts.
    ("lake stream: an s3a:// lake without a catalog that can serve it",
     [str(BIN / "smartcity-lake"), "stream", "--lake", "s3a://bucket/city"], None, "smartcity-lake",
     ["catalog.uri", "s3a://bucket/city", "catalog.type"]),
    ("lake tables: an s3a:// lake without a catalog that can serve it",
     [str(BIN / "smartcity-lake"), "tables", "--lake", "s3a://bucket/city"], None, "smartcity-lake",
     ["catalog.uri", "s3a://bucket/city"]),
    ("bench: unknown benchmark", [*PY, "bench", "edgy"], REPO, "python -m bench", ["'edgy'"]),
    ("bench: wrong-typed argument", [*PY, "bench", "edge", "--agent-seconds", "long"], REPO,
     "python -m bench edge", ["argument --agent-seconds", "'long'"]),
    ("stack: wrong-typed --mqtt-port", [*PY, "deploy.local.stack", "status", "--mqtt-port", "x",
                                        "--run-dir", "{tmp}/run"], REPO,
     "python -m deploy.local.stack", ["argument --mqtt-port"]),
    ("stack: no device id", [*PY, "deploy.local.stack", "device-cert", "--run-dir", "{tmp}/run"], REPO,
     "python -m deploy.local.stack", ["device-cert takes one device id"]),
]


@pytest.mark.parametrize("cmd, cwd, prog, fragments", [c[1:] for c in OTHERS], ids=[c[0] for c in OTHERS])
def test_every_other_command_reports_a_usage_mistake_in_one_line(cmd, cwd, prog, fragments, tmp_path):
    (tmp_path / "a-file").write_text("")
    p = run([c.format(tmp=tmp_path) for c in cmd], cwd or tmp_path)
    assert_one_line(p, prog, *(f.format(tmp=tmp_path) for f in fragments))


# The helper itself -----------------------------------------------------------------------------

def test_the_decorator_returns_2_for_settings_and_usage_errors_and_lets_bugs_through(capsys):
    @cli("prog")
    def main(exc):
        raise exc

    assert main(SettingsError("port: expected an integer, got 'x' (from file a.toml)")) == 2
    assert main(UsageError("cannot read x.nmea: No such file or directory")) == 2
    assert capsys.readouterr().err.splitlines() == [
        "prog: port: expected an integer, got 'x' (from file a.toml)",
        "prog: cannot read x.nmea: No such file or directory"]
    with pytest.raises(KeyError):
        main(KeyError("a bug keeps its traceback"))


def test_a_parser_error_is_one_line_and_exit_2_also_in_subcommands(capsys):
    p = ArgumentParser(prog="tool")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("go").add_argument("--n", type=int)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["go", "--n", "x"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "tool go: argument --n: invalid int value: 'x' (--help for usage)\n"


def test_a_multi_line_message_becomes_one_line():
    assert one_line(ValueError("first\n  second\n")) == "first; second"
    assert one_line(ValueError()) == "ValueError"
