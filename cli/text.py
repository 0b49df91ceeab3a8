"""Text the command line prints: anything from a file or the command line escaped (controls,
surrogates and other non-printables), cut to a length, and written so that no stream encoding or
hostile name can drive the terminal or crash the output."""

from __future__ import annotations

import json
from typing import Any, TextIO

MAX_VALUE_CHARS = 200
TRUNCATED = "... (truncated)"


def printable(text: str) -> str:
    """``text`` with every non-printable character (controls, surrogates...) as an escape.

    ESC becomes ``\\x1b``, a newline ``\\x0a``, a lone surrogate ``\\ud800``; printable Unicode
    (accents, CJK, emoji) stays as it is.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    """The ``\\xNN`` / ``\\uNNNN`` / ``\\UNNNNNNNN`` escape of one character."""
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def clip(text: str, limit: int, cut: bool = False) -> str:
    """``text`` in at most ``limit`` characters, ending with '... (truncated)' if (already) cut."""
    if len(text) <= limit and not cut:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def shown(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """A value from a file as escaped display text of at most ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    head = text[: 2 * limit]  # escaping only lengthens, so this prefix is enough
    return clip(printable(head), limit, cut=len(head) < len(text))


def key_values(pairs: list[tuple[str, str]]) -> list[str]:
    """Left-aligned ``key  value`` lines."""
    width = max(len(key) for key, _ in pairs)
    return [f"{key.ljust(width)}  {value}" for key, value in pairs]


def write_line(text: str, out: TextIO) -> None:
    """Write ``text`` and a newline; what the stream's encoding lacks becomes an escape."""
    encoding = getattr(out, "encoding", None) or "utf-8"
    out.write(text.encode(encoding, "backslashreplace").decode(encoding) + "\n")


def print_json(obj: dict[str, Any], out: TextIO) -> None:
    """Write exactly one ASCII JSON object (lone surrogates as \\ud800 escapes) and a newline."""
    write_line(json.dumps(obj, ensure_ascii=True, allow_nan=False), out)
