"""Experiment configuration: TOML or JSON files into dataclasses with defaults.

Each experiment defines a (possibly nested) dataclass; :func:`load_config` fills it from a file, nested TOML
tables mapping to nested dataclass fields. Unknown keys and wrong types fail loudly with a :class:`ConfigError`
(a ValueError) that names the key and the allowed ones. :func:`save_resolved` writes the complete configuration,
defaults included, as JSON beside a checkpoint or result.

>>> @dataclasses.dataclass
... class Train:
...     epochs: int = 10
...     lr: float = 0.01
>>> config_from_dict(Train, {"epochs": 2}).epochs
2
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path

from learn import ConfigError
from learn.checkpoint import to_jsonable
from surfmap._atomic import atomic_write_bytes
from surfmap._validation import check_choice, check_int, check_number, invalid
from surfmap.exceptions import InputFileNotFoundError

__all__ = ["apply_overrides", "config_from_dict", "load_config", "read_config_file", "save_resolved"]


def read_config_file(path) -> dict:
    """Parse a ``.toml`` or ``.json`` file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"config file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            with open(path, "rb") as fh:
                return tomllib.load(fh)
        if suffix == ".json":
            with open(path) as fh:
                data = json.load(fh)
            if not isinstance(data, dict):
                raise ConfigError(f"config file {str(path)!r} should hold a JSON object at top level")
            return data
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid {suffix[1:].upper()}: {exc}") from exc
    raise ConfigError(f"config file {str(path)!r} should end in .toml or .json; found {suffix or 'no suffix'!r}")


def _coerce(value, tp, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key {key!r}: {value!r} matches none of {tp}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise invalid(f"config key {key!r}", "a table (section)", type(value).__name__, error=ConfigError)
        return config_from_dict(tp, value, prefix=key + ".")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise invalid(f"config key {key!r}", "a list", repr(value), error=ConfigError)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise invalid(f"config key {key!r}", f"{len(args)} items", len(value), error=ConfigError)
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        inner = args[0] if args else typing.Any
        out = [_coerce(v, inner, key) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise invalid(f"config key {key!r}", "a table", repr(value), error=ConfigError)
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise invalid(f"config key {key!r}", "true or false", repr(value), error=ConfigError)
        return value
    if tp is int:
        return check_int(f"config key {key!r}", value, error=ConfigError)
    if tp is float:
        return check_number(f"config key {key!r}", value, finite=False, error=ConfigError)
    if tp is str:
        if not isinstance(value, str):
            raise invalid(f"config key {key!r}", "a string", repr(value), error=ConfigError)
        return value
    if typing.get_origin(tp) is typing.Literal:
        return check_choice(f"config key {key!r}", value, args, error=ConfigError)
    return value


def config_from_dict(cls, data: dict, *, prefix: str = ""):
    """Build dataclass ``cls`` from ``data``; missing keys keep their defaults.

    Raises
    ------
    ConfigError
        An unknown key (message names it and the allowed keys) or a value of the wrong type.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"'cls' should be a dataclass type; {cls!r} was provided")
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<top>'!r} should be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {[prefix + k for k in unknown]}; allowed keys"
            f"{' in [' + prefix.rstrip('.') + ']' if prefix else ''}: {sorted(fields)}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid configuration{' in [' + prefix.rstrip('.') + ']' if prefix else ''}: {exc}") from exc
    return obj


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``section.key=value`` strings (values parsed as TOML, else kept as strings) to a raw config dict."""
    data = json.loads(json.dumps(data))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} should look like 'section.key=value'")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return data


def load_config(path, cls, overrides: list[str] | None = None):
    """Read a TOML / JSON file into dataclass ``cls`` (defaults for missing keys, overrides applied last)."""
    data = read_config_file(path) if path is not None else {}
    return config_from_dict(cls, apply_overrides(data, overrides))


def save_resolved(config, path) -> Path:
    """Write the complete configuration (defaults included) as JSON, atomically."""
    path = Path(path)
    text = json.dumps(to_jsonable(config), indent=2, sort_keys=True).encode()
    atomic_write_bytes(path, text)
    return path
