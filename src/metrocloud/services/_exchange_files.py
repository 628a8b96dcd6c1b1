"""Where a node keeps the ciphertext of routed documents: files under DATA_DIR/exchange.

Only ciphertext is ever written here (the node never holds a key to anything else). An
upload goes to a temporary file in ``exchange/tmp`` while its SHA-256 is computed; once it is
complete and checked it is fsync'ed and renamed to ``exchange/<xx>/<message id>.ct`` (``xx``
the last two characters of the id, so no directory grows past a few thousand files). Its
digest is kept in the database and checked again before every download.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from metrocloud._fs import fsync_directory
from metrocloud.store.database import StorageUnavailable

__all__ = ["CiphertextFile", "TempCiphertext", "ciphertext_path", "exchange_dir"]

_READ = 1024 * 1024


def exchange_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "exchange"


def ciphertext_path(data_dir: Path, message_id: str) -> Path:
    return exchange_dir(data_dir) / message_id[-2:] / f"{message_id}.ct"


class TempCiphertext:
    """An upload being written: bytes in, SHA-256 alongside; :meth:`publish` or :meth:`discard`."""

    def __init__(self, data_dir: Path) -> None:
        tmp = exchange_dir(data_dir) / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=tmp)
        self.path = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._sha.update(data)
        self._file.write(data)
        self.size += len(data)

    def sha256(self) -> str:
        return self._sha.hexdigest()

    def publish(self, target: Path) -> None:
        """Make the file durable under ``target`` (atomic rename, then the directory)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, target)
        fsync_directory(target.parent)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class CiphertextFile:
    """A stored ciphertext, checked against its recorded digest before it is served."""

    def __init__(self, path: Path, size: int, sha256: str) -> None:
        self.path, self.size, self.sha256 = path, size, sha256

    def check(self) -> None:
        """:class:`StorageUnavailable` if the file is missing, has another size or digest."""
        digest = hashlib.sha256()
        try:
            with open(self.path, "rb") as handle:
                while block := handle.read(_READ):
                    digest.update(block)
                size = handle.tell()
        except FileNotFoundError:
            raise StorageUnavailable(
                f"the stored ciphertext {self.path.name} is missing from the node's data "
                "directory; restore it from a backup"
            ) from None
        if size != self.size or not hmac.compare_digest(digest.hexdigest(), self.sha256):
            raise StorageUnavailable(
                f"the stored ciphertext {self.path.name} is damaged: expected {self.size} bytes "
                f"with SHA-256 {self.sha256}, found {size} bytes with {digest.hexdigest()}; "
                "restore it from a backup"
            )
