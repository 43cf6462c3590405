"""Job configs: dataclasses loaded from YAML overlays plus `key=value` command-line overrides.

Every job has one dataclass (`TrainConfig`, `DataConfig`, ...). Its `__post_init__` rejects bad values
by quoting them. This module holds only the generic machinery shared by all of them:

    cfg = load_config(TrainConfig, ["configs/train/debug.yaml"], ["lr=1e-4", "batch_size=2"])
    save_config(cfg, out_dir / "config.yaml")

A YAML file may hold several named overlays (`{"debug": {...}, "paper": {...}}`); `load_config` then
takes `overlay=` to pick one. Nested dataclasses are filled from nested mappings; overrides use dots
(`policy.hidsize=128`).
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Iterable, Type, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key is wrong; the message says which and what to do."""


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Turn a YAML/CLI value into `tp`; strings from the command line are parsed as YAML scalars."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:  # Optional[X] and friends
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], where)
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if isinstance(value, str) and tp is not str:
        value = yaml.safe_load(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads exponents without a dot ("3e-4") as strings
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp is int and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is str and not isinstance(value, str):
        if value is None:
            raise ConfigError(f"{where}: expected a string, got null")
        value = str(value)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") if item_tp is not Any else v
                 for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict and isinstance(value, dict):
        return dict(value)
    return value


def from_dict(cls: Type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys with the list of known ones."""
    types = _field_types(cls)
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; known keys: {sorted(types)}")
    kwargs = {k: _coerce(v, types[k], f"{where + '.' if where else ''}{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """Plain-dict view of a (nested) config dataclass, safe for YAML/JSON."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
    data[parts[-1]] = value


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(cls: Type[T], files: Iterable[str | Path] = (), overrides: Iterable[str] = (),
                overlay: str | None = None, base: dict | None = None) -> T:
    """Defaults <- `base` <- each YAML file (or its `overlay` section) <- `key=value` overrides."""
    data: dict = dict(base or {})
    for f in files:
        path = Path(f)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if overlay is not None and overlay in loaded and isinstance(loaded[overlay], dict):
            loaded = loaded[overlay]
        data = _deep_merge(data, loaded)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), raw)
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def check(cond: bool, msg: str) -> None:
    """Raise ConfigError(msg) unless cond; used by `__post_init__` validators."""
    if not cond:
        raise ConfigError(msg)
