"""The data errors: every problem with input data, a source choice or a file set is a DataError
whose message names the file or setting and the fix."""

class DataError(ValueError):
    """Raised when MNIST input data, a source choice or a file set is unusable."""


class ChecksumError(DataError):
    """Raised when bytes do not have the sha256 they are pinned to."""

    def __init__(self, name: str, expected: str, actual: str) -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"sha256 mismatch for {name}: expected {expected}, got {actual}. "
            "The file is corrupt or a different version; delete it and fetch it again."
        )


class UnsafePickleError(DataError):
    """Raised when a pickle asks for anything beyond plain numpy arrays."""


class IdxFormatError(DataError):
    """Raised when bytes are not a well-formed IDX file or an array cannot be written as one."""


class FetchError(DataError):
    """Raised when downloading MNIST fails (registry or mirror unreachable); a retry may succeed."""
