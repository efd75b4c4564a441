"""File writes that a reader or a killed writer can never see half done."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


def is_in_flight(candidate: Path, path: Path) -> bool:
    """Whether `candidate` is a temporary file of a `write_atomic(path, ...)` still being written."""
    return candidate.name.startswith(f".{path.name}.") and candidate.name.endswith(TMP_SUFFIX)


def write_atomic(path: Path, content: bytes | Callable[[BinaryIO], object]) -> None:
    """Write `content` (bytes, or a function that writes to a binary file) to a temporary file, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, bytes):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
