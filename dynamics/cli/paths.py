"""Output paths checked before a command starts its work, so that a bad --out never costs a finished computation."""

import os
from pathlib import Path

from fitting.errors import UserError


def _writable_folder(folder: Path, option: str, path: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"{option} {path}: cannot create {folder} ({err.strerror or err}); choose another path"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: {folder} is not writable; choose another path")


def check_output_file(path: Path, suffixes: tuple[str, ...], option: str = "--out") -> Path:
    """`path` when a file with one of `suffixes` can be written there (its folder is created); UserError otherwise."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name ending in {' or '.join(suffixes)}")
    if path.suffix.lower() not in suffixes:
        raise UserError(f"{option} {path}: give a file name ending in {' or '.join(suffixes)}")
    _writable_folder(path.parent, option, path)
    return path


def check_output_dir(path: Path, option: str = "--out") -> Path:
    """`path` when it is, or can become, a writable folder; UserError when it is a file or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; give a folder (it is created when missing)")
    _writable_folder(path, option, path)
    return path
