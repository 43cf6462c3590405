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

import ast
import copy
import dataclasses
import inspect
import json
import textwrap
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Type, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key is wrong; the message says which and what to do."""


def absolute_local(path: str | None) -> str | None:
    """A local path made absolute here (`~` expanded); empty values and URIs (`s3://...`) are returned as given.
    Jobs hand paths to Ray tasks, actors and Train workers, which may start in another folder."""
    return path if not path or "://" in path else str(Path(path).expanduser().resolve())


YAML_NULLS = ("null", "Null", "NULL", "~")
"""the texts YAML reads as null (the empty text aside, which stays "" on the command line)"""


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{where}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Turn a YAML/CLI value into `tp`; strings from the command line are parsed as YAML scalars."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:  # Optional[X] and friends
        if type(None) in args and (value is None or isinstance(value, str) and value.strip() in YAML_NULLS):
            return None  # `key=null` on the command line as in a file (a plain str field keeps the text "null")
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], where)
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if isinstance(value, str):  # a whole section from the command line: `world={tree_logs: 4}`
            value = _parse_yaml(value, where)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if isinstance(value, str) and tp is not str:
        value = _parse_yaml(value, where)
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


def from_dict(cls: Type[T], data: dict, where: str = "", defaults: Any = None) -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys with the list of known ones.

    Fields the mapping leaves out take `defaults`' values (an instance of `cls`), else the class's own. A section
    (a dataclass-typed field) given in part keeps the rest of its default, the parent's: `world.cow_herds=3` on
    the quick start keeps its `world.tree_logs` 4 where WorldConfig's own is 1. Other values replace theirs whole.
    """
    types = _field_types(cls)
    unknown = sorted(set(data) - set(types))
    if unknown:
        moved = getattr(cls, "MOVED_KEYS", {})
        hints = "; ".join(f"{k} is now {moved[k]}" for k in unknown if k in moved)
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; "
                          + (f"{hints}" if hints else f"known keys: {sorted(types)}"))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if defaults is not None:  # else the dataclass fills it in
                kwargs[f.name] = copy.deepcopy(getattr(defaults, f.name))
            continue
        at = f"{where + '.' if where else ''}{f.name}"
        value, tp = data[f.name], types[f.name]
        if dataclasses.is_dataclass(tp) and not isinstance(value, tp):
            default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
            if isinstance(value, str):  # a whole section from the command line: `world={tree_logs: 4}`
                value = _parse_yaml(value, at)
            if isinstance(value, dict) and dataclasses.is_dataclass(default):
                kwargs[f.name] = from_dict(tp, value, at, defaults=default)
                continue
        kwargs[f.name] = _coerce(value, tp, at)
    return cls(**kwargs)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


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


def read_yaml(path: Path) -> dict:
    """A YAML config file as a mapping (empty file: {})."""
    loaded = _parse_yaml(path.read_text(), f"config file {path}") or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: expected a mapping of keys to values, got {type(loaded).__name__}")
    return loaded


def load_config(cls: Type[T], files: Iterable[str | Path] = (), overrides: Iterable[str] = (),
                overlay: str | None = None, base: dict | None = None,
                reader: Callable[[Path], dict] = read_yaml) -> T:
    """Defaults <- `base` <- each YAML file (or its `overlay` section) <- `key=value` overrides.

    `reader` turns one file into a mapping (the serve job reads Serve's own config format with it)."""
    data: dict = dict(base or {})
    for f in files:
        path = Path(f)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        loaded = reader(path)
        if overlay is not None and overlay in loaded and isinstance(loaded[overlay], dict):
            loaded = loaded[overlay]
        data = _deep_merge(data, loaded)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), raw)
    return from_dict(cls, data)


CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # package data (the checkout's configs/ links here)
"""Where the named presets live: `configs/<kind>/<name>.yaml` (`--config debug` of `steve1 train`)."""


def preset_path(kind: str, name_or_file: str | Path) -> Path:
    """`preset_path("train", "debug")` -> configs/train/debug.yaml; a YAML path or an existing file is returned
    as is. An unknown name is refused with the list of presets of that kind."""
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    folder = CONFIG_DIR / kind
    candidate = folder / f"{name_or_file}.yaml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in folder.glob("*.yaml"))
    raise ConfigError(f"unknown {kind} preset {str(name_or_file)!r}: use one of {known} or a YAML file path")


def preset_names(kind: str) -> list[str]:
    """The named presets of one kind (`train`: debug, finetune, paper)."""
    return sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written under it in the dataclass body (empty when there is none),
    including inherited fields. This is what `steve1 <job> --help` lists."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:] + [None]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                text = ""
                if (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                        and isinstance(after.value.value, str)):
                    text = " ".join(after.value.value.split())
                docs[node.target.id] = text
    return docs


def describe_fields(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, str]]:
    """(dotted key, default as YAML, docstring) for every field, nested dataclasses flattened. A nested section's
    defaults are its parent's (the quick start's `world.tree_logs` is 4, WorldConfig's own 1)."""
    rows = []
    docs = field_docs(cls)
    types = _field_types(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        tp = types[f.name]
        default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        if dataclasses.is_dataclass(tp):
            rows += describe_fields(tp, key + ".", default if dataclasses.is_dataclass(default) else None)
            continue
        shown = json.dumps(default, default=str)  # one line, unambiguous: "null", "[]", "\"debug\""
        rows.append((key, shown, docs.get(f.name, "")))
    return rows


def save_config(cfg: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def check(cond: bool, msg: str) -> None:
    """Raise ConfigError(msg) unless cond; used by `__post_init__` validators."""
    if not cond:
        raise ConfigError(msg)
