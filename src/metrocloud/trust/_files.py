"""File handling for :class:`metrocloud.trust.keys.KeyStore`: private modes, atomic writes."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import tempfile
from pathlib import Path

from metrocloud._fs import fsync_directory
from metrocloud.domain.errors import InvalidInput

__all__ = [
    "DIRECTORY_MODE",
    "FILE_MODE",
    "ensure_private_directory",
    "read_or_create_passphrase",
    "validate_name",
    "write_new_file",
]

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def validate_name(name: str) -> str:
    """A key name is a plain file-name stem: no separators, no traversal, no hidden files."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None or ".." in name:
        raise InvalidInput(
            f"key name {name!r} is not allowed; expected 1-100 characters of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit and without '..'",
            rule="metrocloud key store naming",
        )
    return name


def ensure_private_directory(directory: Path) -> None:
    """Create ``directory`` with mode 0o700 if missing; an existing directory is left as is."""
    if directory.is_dir():
        return
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    # mkdir's mode is filtered through the umask; set it exactly
    os.chmod(directory, DIRECTORY_MODE)


def write_new_file(path: Path, data: bytes) -> bool:
    """Atomically create ``path`` holding ``data`` with mode 0o600, never replacing a file.

    The bytes are written and fsync'ed to a temporary file in the same directory, which is
    then published under the final name in one step. Publication uses ``os.link``, which
    fails if the name exists, so two processes racing to create the same key cannot
    overwrite each other's file; on filesystems without hard links it falls back to
    ``os.replace``. Returns False (and writes nothing) if ``path`` exists already.
    """
    directory = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)  # mkstemp uses 0o600 already; be explicit
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError:  # pragma: no cover - filesystems without hard links
            if path.exists():
                return False
            os.replace(temporary, path)
        fsync_directory(directory)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def read_or_create_passphrase(path: Path) -> bytes:
    """Read the passphrase file, creating it with 32 random bytes (base64url) if missing."""
    if not path.exists():
        ensure_private_directory(path.parent)
        # 32 random bytes as 43 base64url characters: printable, so an operator can move it
        # into the environment variable unchanged
        write_new_file(path, (secrets.token_urlsafe(32) + "\n").encode("ascii"))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise InvalidInput(
            f"passphrase file {path} has mode {mode:#o}; expected 0o600 (no group/other access)",
            rule="metrocloud key store file modes",
        )
    passphrase = path.read_bytes().strip()
    if len(passphrase) < 16:
        raise InvalidInput(
            f"passphrase file {path} holds {len(passphrase)} bytes; expected at least 16",
            rule="metrocloud key store passphrase",
        )
    return passphrase
