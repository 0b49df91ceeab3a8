"""Typed dataclasses from plain mappings: unknown or missing keys and wrong types are errors.

Used for every section of a run's parameters: a key that is not a field, a field that is not given
(unless it may be null) or a value of the wrong type raises `ConfigError` naming the key's path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from deepcompression.config import ConfigError


def _fail(path: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{path}: {message}")


T = TypeVar("T")


def _optional(hint: Any) -> bool:
    """Whether `hint` admits None (such keys may be left out: absent means null)."""
    return get_origin(hint) in (typing.Union, types.UnionType) and type(None) in get_args(hint)


def from_dict(cls: type[T], data: Mapping[str, Any] | None, path: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown or missing keys and wrong types."""
    if data is None:
        _fail(path or "<root>", "is empty; it needs its keys (see params.yaml in the repository)")
    if not isinstance(data, Mapping):
        _fail(path or "<root>", f"expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        _fail(f"{where}{unknown[0]}", f"unknown key; allowed keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    missing = [n for n in fields if n not in data and not _optional(hints[n])]
    if missing:  # the parameters given are the one source of values: never a silent default
        where = f"{path}." if path else ""
        _fail(
            f"{where}{missing[0]}",
            "missing key; every key is required (params.yaml in the repository documents each)",
        )
    values = {}
    for name, value in data.items():
        key = f"{path}.{name}" if path else name
        values[name] = _coerce(hints[name], value, key)
    obj = cls(**values)
    if not path:
        obj.validate()  # type: ignore[attr-defined]
    return obj


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against type `hint`, converting ints to floats where a float is expected."""
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)  # type: ignore[arg-type]
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            _fail(key, f"{value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        if len(inner) == 1:
            return _coerce(inner[0], value, key)
        problems = []  # e.g. Literal["auto"] | float: the first option that accepts the value
        for option in inner:
            try:
                return _coerce(option, value, key)
            except ConfigError as err:
                problems.append(str(err).split(f"{key}: ", 1)[-1])
        _fail(key, "; or: ".join(problems))
    if origin is tuple:
        item_type = get_args(hint)[0]
        if not isinstance(value, list | tuple):
            _fail(key, f"expected a list, got {value!r}")
        return tuple(_coerce(item_type, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        key_type, value_type = get_args(hint)
        if not isinstance(value, Mapping):
            _fail(key, f"expected a mapping, got {type(value).__name__}")
        return {
            _coerce(key_type, k, f"{key}.{k}"): _coerce(value_type, v, f"{key}.{k}")
            for k, v in value.items()
        }
    if hint is bool:
        if not isinstance(value, bool):
            _fail(key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, f"expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            hint_text = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(value, str) else ""
            _fail(key, f"expected a number, got {value!r}{hint_text}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            _fail(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {key}")


def to_dict(obj: Any) -> dict[str, Any]:
    """The config as plain JSON-able data (for provenance and Prefect parameters)."""
    return dataclasses.asdict(obj)
