"""The header's JSON text, parsed strictly: UTF-8, depth, value count and number rules.

Depth and the number of values are counted by a vectorised scan of the text before ``json.loads``
builds any Python object, so a header that breaks a limit costs a few passes over its bytes, not
a structure as large as the text allows.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from deepcompression.format.errors import MalformedHeader
from deepcompression.format.spec import MAX_JSON_DEPTH, MAX_JSON_INT

__all__ = ["load_json", "json_shape"]

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_OPEN, _CLOSE, _QUOTE, _COMMA = b"(", b")", b'"', b","
_CLASSES = bytes(
    {ord("["): _OPEN[0], ord("{"): _OPEN[0], ord("]"): _CLOSE[0], ord("}"): _CLOSE[0],
     ord('"'): _QUOTE[0], ord(","): _COMMA[0]}.get(byte, ord("a"))
    for byte in range(256)
)  # fmt: skip
"""Byte -> its class: open, close, quote, comma, or "a" for anything else (scalars, keys)."""
_WHITESPACE = b" \t\n\r"
_CHUNK = 1 << 16


def load_json(text: bytes, max_values: int) -> object:
    """Parse header JSON strictly: depth and value count (scanned first), UTF-8, integer limits,
    no duplicate keys or NaN; MalformedHeader names the rule broken."""
    depth, values = json_shape(text)
    if depth > MAX_JSON_DEPTH:
        raise MalformedHeader(
            f"header JSON is nested too deeply ({depth} levels; at most {MAX_JSON_DEPTH})"
        )
    if values > max_values:
        raise MalformedHeader(
            f"header JSON holds {values} values; this header may hold at most {max_values} "
            "(see FORMAT.md, Limits)"
        )
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedHeader(f"header is not valid UTF-8: {err}") from err
    try:
        return json.loads(
            decoded,
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            parse_int=_exact_int,
        )
    except MalformedHeader:
        raise
    except RecursionError as err:
        raise MalformedHeader("header JSON is nested too deeply") from err
    except ValueError as err:
        raise MalformedHeader(f"header is not valid JSON: {err}") from err


def json_shape(text: bytes) -> tuple[int, int]:
    """(most arrays/objects open at once, number of values; keys excluded), exact for valid JSON.

    Outside strings, values = 1 + commas + non-empty containers; brackets and commas inside
    strings do not count. Runs over 64 KiB chunks of the classified text (memory: twice the
    text).
    """
    marks = _ESCAPE.sub(b"", text).translate(_CLASSES, _WHITESPACE)
    depth = deepest = commas = opens = empties = 0
    in_string = False
    last = 0
    for start in range(0, len(marks), _CHUNK):
        chunk = np.frombuffer(marks, dtype=np.uint8, count=min(_CHUNK, len(marks) - start),
                              offset=start)  # fmt: skip
        quotes = chunk == _QUOTE[0]
        parity = np.bitwise_xor.accumulate(quotes) ^ in_string
        in_string = bool(parity[-1])
        tokens = chunk[(parity & quotes) | ~(parity | quotes)]
        if not tokens.size:
            continue
        is_open, is_close = tokens == _OPEN[0], tokens == _CLOSE[0]
        commas += int(np.count_nonzero(tokens == _COMMA[0]))
        opens += int(np.count_nonzero(is_open))
        empties += int(np.count_nonzero(is_open[:-1] & is_close[1:]))
        empties += int(last == _OPEN[0] and bool(is_close[0]))
        last = int(tokens[-1])
        running = depth + np.cumsum(is_open.astype(np.int64) - is_close, dtype=np.int64)
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
    return deepest, 1 + commas + opens - empties


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """object_pairs_hook refusing duplicate keys."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise MalformedHeader("header JSON object has a duplicate key")
    return obj


def _reject_constant(token: str) -> float:
    """parse_constant refusing NaN and the infinities."""
    raise MalformedHeader(f"header JSON contains {token}, which is not valid JSON")


def _finite_float(token: str) -> float:
    """parse_float refusing numbers that round to an infinity."""
    value = float(token)
    if not math.isfinite(value):
        raise MalformedHeader(f"header JSON number {token[:40]} is out of float range")
    return value


def _exact_int(token: str) -> int:
    """An integer literal of magnitude at most MAX_JSON_INT (exact in a double)."""
    if len(token) > 17 or abs(value := int(token)) > MAX_JSON_INT:
        raise MalformedHeader(
            f"header JSON integer {token[:40]} is beyond +-(2**53 - 1), which a double cannot "
            "hold exactly"
        )
    return value
