"""Strict typed configs: one YAML file + dot-list overrides -> a dataclass tree (training and data pipeline).

The loader is generic (any dataclass tree works), in the spirit of lingua's `dataclass_from_dict(strict=True)`:

    cfg = load_config(TrainConfig, "configs/scratch-small.yaml", ["optim.lr=3e-4", "train.steps=200"])

Rules (DESIGN.md §4.3):
- an unknown key is an error that names its full path (``optim.lrr``) and the valid keys at that level;
- a value of the wrong type is an error that names the path, the expected type and the value;
- override values are parsed as YAML scalars/flow collections (``a.b=[1,2]``, ``x=null``, ``flag=true``);
- list items are addressed by index (``train.stages.1.steps=100``);
- ``1e-4`` (which YAML 1.1 reads as a string) is accepted for float fields;
- ``_base_: other.yaml`` (relative to the file) inherits another config: mappings merge, other values replace.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not match the dataclass schema."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Convert a YAML value to the annotated type `tp`, raising ConfigError naming `path`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{path}: {value!r} matches none of {_type_name(tp)} ({'; '.join(errors)})")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{path}: {value!r} is not one of {list(args)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, path)
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        return [_convert(v, item_tp, f"{path}.{i}") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}.{i}") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(v, a, f"{path}.{i}") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(k, kt, path): _convert(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-4" as a string
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{path}: expected a path, got {value!r}")
    raise ConfigError(f"{path}: unsupported annotation {_type_name(tp)}")


def from_dict(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError naming the path."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]!s} (valid keys{' of ' + path if path else ''}: "
            f"{', '.join(sorted(fields))})"
        )
    kwargs = {k: _convert(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path or cls.__name__}: {e}") from e


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML/JSON-able data (Paths become strings, tuples lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=None, width=110)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], parsed value). The value is read as YAML (``[1, 2]``, ``null``)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from e
    return key.split("."), value


def apply_override(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set data[k0][k1]...[kn] = value, creating mappings on the way; integer keys index lists."""
    node: Any = data
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            try:
                idx = int(k)
                node[idx]  # noqa: B018  (bounds check)
            except (ValueError, IndexError) as e:
                raise ConfigError(f"override {'.'.join(keys)}: {k!r} is not a valid index") from e
            if last:
                node[idx] = value
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {'.'.join(keys[:i])} is not a mapping")
        if last:
            node[k] = value
        else:
            if node.get(k) is None:
                node[k] = {}
            node = node[k]


BASE_KEY = "_base_"


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` deep-merged onto a copy of `base`: mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a mapping, with its `_base_` (a file path relative to it) merged underneath, recursively:
    a config can state only what it changes from another."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}" + (f" (the {BASE_KEY} of {_chain[-1]})" if _chain else ""))
    if p.resolve() in _chain:
        raise ConfigError(f"{BASE_KEY} cycle: {' -> '.join(str(c) for c in (*_chain, p.resolve()))}")
    loaded = yaml.safe_load(p.read_text())
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
    base = loaded.pop(BASE_KEY, None)
    if base is None:
        return loaded
    if not isinstance(base, str):
        raise ConfigError(f"{p}: {BASE_KEY} must be a file path, got {base!r}")
    return merge(read_yaml(p.parent / base, (*_chain, p.resolve())), loaded)


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Read `path` (YAML, with its `_base_` chain; None = all defaults), apply dot-list `overrides`, and build
    `cls` strictly."""
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    for item in overrides:
        keys, value = parse_override(item)
        apply_override(data, keys, value)
    return from_dict(cls, data)
