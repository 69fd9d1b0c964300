"""Typed settings from defaults, a TOML file, the environment and command-line overrides.

    @dataclass
    class Mqtt:
        host: str = "127.0.0.1"
        port: int = 1883
        password: str | None = None

    @dataclass
    class Settings:
        log_level: str = "WARNING"
        mqtt: Mqtt = field(default_factory=Mqtt)

    s = load(Settings, "/etc/smartcity/edge.toml", "SMARTCITY_", {"mqtt.port": 8883})

Precedence, lowest first: dataclass defaults < TOML file < environment < overrides.

Environment names: PREFIX + path joined by a DOUBLE underscore, upper case:
SMARTCITY_LOG_LEVEL, SMARTCITY_MQTT__HOST, SMARTCITY_MQTT__CA_FILE. The double underscore is
the only separator because field names contain single underscores (is SMARTCITY_MQTT_CA_FILE
mqtt.ca_file or mqtt_ca.file?). Variables with the prefix that name no setting are ignored
(other tools share the prefix, e.g. SMARTCITY_CACHE), but one containing "__" is logged as a
probable typo.

A file written for a larger settings class (the lake job's, read by smartcity-catalog, which
needs only its location) is loaded with known_only=True: its top-level keys that name no field of
this class are skipped; inside a section this class has, an unknown key is still an error.

Overrides: {"mqtt.port": 8883} or {"mqtt": {"port": 8883}}; None values mean "not given"
(argparse defaults) and are skipped.

Types: str, int, float, bool, Path, X | None, list[X], nested dataclasses. Environment values
are strings and get parsed ("true"/"false"/"1"/"0"/"yes"/"no"/"on"/"off" for bools, "" or
"none"/"null" for None, comma-separated for lists). Errors name the key and where the value came
from. Secrets (fields named *password, *secret, *token, *key or with metadata secret=True) are
replaced by "***" in redacted().
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

_SECRET_RE = re.compile(r"(^|_)(password|passwd|secret|token|key)$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"", "none", "null"}
REDACTED = "***"


class SettingsError(ValueError):
    pass


def is_secret(field: dataclasses.Field) -> bool:
    return bool(field.metadata.get("secret")) or bool(_SECRET_RE.search(field.name))


def _type_name(tp) -> str:
    return {int: "an integer", float: "a number", bool: "a boolean (true/false)"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    def bad(expected: str) -> SettingsError:
        return SettingsError(f"{key}: expected {expected}, got {value!r} (from {source})")

    # TOML values are typed: port = "1883" is a mistake worth reporting. Environment values and
    # overrides (e.g. from a --set key=value flag) are strings and get parsed.
    if isinstance(value, str) and source.startswith("file") and tp not in (str, Path) \
            and typing.get_origin(tp) not in (typing.Union, types.UnionType):
        raise bad(_type_name(tp))
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and source.startswith("env")
                             and value.strip().lower() in _NONE):
            if len(args) < len(typing.get_args(tp)):
                return None
            raise bad(" or ".join(getattr(a, "__name__", str(a)) for a in args))
        errors = []
        for a in args:
            try:
                return _coerce(value, a, key, source)
            except SettingsError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else bad(" or ".join(getattr(a, "__name__", str(a))
                                                                  for a in args))
    if value is None:
        raise bad(getattr(tp, "__name__", str(tp)) + " (not optional)")
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (str,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        items = [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("a boolean (true/false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip(), 0) if value.strip().lower().startswith("0x") \
                    else int(value.strip())
            except ValueError:
                pass
        raise bad("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise bad("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad("a string")
    if tp is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value).expanduser()
        raise bad("a path")
    if tp is Any:
        return value
    raise SettingsError(f"{key}: unsupported setting type {tp!r}")


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls, layers: list[tuple[str, Mapping[str, Any]]], prefix: str) -> Any:
    """Instantiate cls; each layer is (source name, nested dict of raw values), later wins."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for source, layer in layers:
        for k in layer:
            if k not in fields:
                raise SettingsError(f"{prefix}{k}: unknown setting (from {source}); known: "
                                    f"{sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        tp = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            sub = []
            for source, layer in layers:
                if name in layer:
                    if not isinstance(layer[name], Mapping):
                        raise SettingsError(f"{key}: is a section, got {layer[name]!r} (from {source})")
                    sub.append((source, layer[name]))
            kwargs[name] = _build(tp, sub, key + ".")
            continue
        for source, layer in layers:
            if name in layer:
                kwargs[name] = _coerce(layer[name], tp, key, source)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a field without default that nobody set
        raise SettingsError(f"{prefix or cls.__name__}: {e}") from None
    except ValueError as e:  # __post_init__ validation
        raise SettingsError(f"{prefix or cls.__name__ + ': '}{e}") from None


def _paths(cls, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for name, tp in _hints(cls).items():
        if name not in {f.name for f in dataclasses.fields(cls)}:
            continue
        if dataclasses.is_dataclass(tp):
            out.update(_paths(tp, prefix + (name,)))
        else:
            out[prefix + (name,)] = tp
    return out


def _nest(flat: Mapping[tuple[str, ...], Any]) -> dict:
    root: dict = {}
    for path, v in flat.items():
        d = root
        for p in path[:-1]:
            d = d.setdefault(p, {})
        d[path[-1]] = v
    return root


def env_layer(cls, env_prefix: str, environ: Mapping[str, str]) -> tuple[dict, dict[str, str]]:
    """(nested dict of raw env values, {dotted key: env var name})."""
    by_name = {env_prefix.upper() + "__".join(p).upper(): p for p in _paths(cls)}
    found, origin = {}, {}
    for var, value in environ.items():
        if not var.upper().startswith(env_prefix.upper()):
            continue
        path = by_name.get(var.upper())
        if path is None:
            if "__" in var[len(env_prefix):]:
                log.warning("environment variable names no setting (typo?)", extra={"var": var})
            continue
        found[path] = value
        origin[".".join(path)] = var
    return _nest(found), origin


def _overrides_layer(overrides: Mapping[str, Any] | None) -> dict:
    flat: dict[tuple[str, ...], Any] = {}

    def walk(d: Mapping, prefix: tuple[str, ...]):
        for k, v in d.items():
            path = prefix + tuple(str(k).split("."))
            if isinstance(v, Mapping):
                walk(v, path)
            elif v is not None:
                flat[path] = v
    walk(overrides or {}, ())
    return _nest(flat)


def load(cls: type[T], toml_path: str | os.PathLike | None = None, env_prefix: str = "SMARTCITY_",
         overrides: Mapping[str, Any] | None = None,
         environ: Mapping[str, str] | None = None, known_only: bool = False) -> T:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if toml_path is not None:
        p = Path(toml_path)
        try:
            with open(p, "rb") as fh:
                data = tomllib.load(fh)
            if known_only:
                names = {f.name for f in dataclasses.fields(cls)}
                data = {k: v for k, v in data.items() if k in names}
            layers.append((f"file {p}", data))
        except FileNotFoundError:
            raise SettingsError(f"settings file {p} does not exist") from None
        except OSError as e:  # a directory, no permission, ...
            raise SettingsError(f"settings file {p} cannot be read: {e.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise SettingsError(f"settings file {p} is not valid TOML: {e}") from None
    env, origin = env_layer(cls, env_prefix, os.environ if environ is None else environ)
    if env:
        # Each value's source names its variable so an error points at what to fix.
        for dotted, var in origin.items():
            path = dotted.split(".")
            layers.append((f"env {var}", _nest({tuple(path): _get(env, path)})))
    ov = _overrides_layer(overrides)
    if ov:
        layers.append(("overrides", ov))
    return _build(cls, layers, "")


def _get(d: Mapping, path: list[str]) -> Any:
    for p in path:
        d = d[p]
    return d


def redacted(obj: Any) -> dict:
    """A dict of the settings fit for a log line: secrets that are set become "***"."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = redacted(v)
        elif is_secret(f) and v not in (None, ""):
            out[f.name] = REDACTED
        elif isinstance(v, Path):
            out[f.name] = str(v)
        else:
            out[f.name] = v
    return out


def read_secret(path: Path | None, value: str | None, what: str) -> str | None:
    """A secret from the file `path` names (read now, stripped), else `value`; `what` names the
    setting in the error when the file cannot be read."""
    if path is None:
        return value
    try:
        return path.read_text().strip()
    except OSError as e:
        raise ValueError(f"{what}: cannot read secret file {path}: {e.strerror}") from None
