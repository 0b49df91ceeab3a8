"""How the command line fails: every error is one ``deepcompression: error: ...`` line on stderr
(at most 500 characters, escaped) and an exit code; OS and format errors name the file."""

from __future__ import annotations

from pathlib import Path

from cli.text import clip, printable
from deepcompression.format.container import DecodedTooLarge, FormatError

PROG = "deepcompression"
MAX_ERROR_CHARS = 500
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure to report as one stderr line with ``exit_code`` (2: bad usage or bad input)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def path_text(path: Path) -> str:
    """A path for messages, escaped (a newline in a file name stays visible as \\x0a)."""
    return printable(str(path))


def read_input(path: Path) -> bytes:
    """Read a whole input file, turning OS errors into a CliError that names the file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CliError(f"{path_text(path)}: no such file") from None
    except IsADirectoryError:
        expected = "expected a compressed-model file"
        raise CliError(f"{path_text(path)}: is a directory, {expected}") from None
    except OSError as err:
        raise CliError(f"{path_text(path)}: cannot read: {err.strerror or err}") from None


def not_a_model(path: Path, err: FormatError) -> CliError:
    """The error for bytes that fail to parse or decode as a compressed-model file."""
    if isinstance(err, DecodedTooLarge):
        return CliError(
            f"{path_text(path)}: tensors decode to {err.decoded_bytes} bytes, over the limit of "
            f"{err.limit} bytes; if you trust the file, rerun with a larger --max-decoded-bytes "
            "(e.g. --max-decoded-bytes 2GiB)"
        )
    return CliError(
        f"{path_text(path)}: not a valid compressed-model file ({type(err).__name__}: {err})"
    )


def _one_line(text: str) -> str:
    """Collapse a message onto one line so stderr carries exactly one error line."""
    return " ".join(text.split())


def error_line(message: str) -> str:
    """The single stderr line for ``message``: one line, escaped, at most 500 characters."""
    head = message[: 2 * MAX_ERROR_CHARS]
    line = printable(_one_line(head))
    return f"{PROG}: error: {clip(line, MAX_ERROR_CHARS, cut=len(head) < len(message))}"
