"""Where a node keeps the ciphertext of routed documents: files under DATA_DIR/exchange.

Only ciphertext is ever written here (the node never holds a key to anything else). An
upload goes to a temporary file in ``exchange/tmp`` while its SHA-256 is computed; once it is
complete and checked it is fsync'ed and renamed to ``exchange/<xx>/<message id>.ct`` (``xx``
the last two characters of the id, so no directory grows past a few thousand files). Its
digest is kept in the database and checked again before every download.

A document coming from another node arrives in pieces (grid outbox messages): they are
written at their offsets into ``exchange/incoming/<message id>.part`` and, once all are in
and checked, that file is renamed into place (:class:`StagedCiphertext`).
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

__all__ = [
    "CiphertextFile",
    "StagedCiphertext",
    "TempCiphertext",
    "ciphertext_path",
    "exchange_dir",
    "staging_path",
    "write_at",
]

_READ = 1024 * 1024


def exchange_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "exchange"


def ciphertext_path(data_dir: Path, message_id: str) -> Path:
    return exchange_dir(data_dir) / message_id[-2:] / f"{message_id}.ct"


def staging_path(data_dir: Path, message_id: str) -> Path:
    """Where the pieces of a document delivered by another node are put together."""
    return exchange_dir(data_dir) / "incoming" / f"{message_id}.part"


def write_at(path: Path, offset: int, data: bytes, *, truncate: bool = False) -> None:
    """Write ``data`` at ``offset`` of ``path`` (created if missing, mode 0600) and fsync it
    before returning: the caller records the piece as received only after this. Writing
    the same piece again writes the same bytes (a redelivery changes nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if truncate:
            os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_directory(path.parent)


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

    def sync(self) -> None:
        """Flush and fsync the bytes written (before the transaction that records them)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def publish(self, target: Path) -> None:
        """Make the file durable under ``target`` (atomic rename, then the directory)."""
        self.sync()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, target)
        fsync_directory(target.parent)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def unpublish(self, target: Path) -> None:
        """Undo :meth:`publish` (the message was not recorded after all)."""
        target.unlink(missing_ok=True)


class StagedCiphertext:
    """A ciphertext already on disk (the pieces of a delivery, put together): the bytes fed
    to :meth:`write` are only hashed; :meth:`publish` renames the file into place.

    Nothing is deleted on failure: the file stays where it is (staged, or already in place)
    for the next attempt, which takes it from either place (:meth:`source`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sha = hashlib.sha256()
        self.size = 0

    @staticmethod
    def source(staged: Path, target: Path) -> Path | None:
        """The staged file, or the one in place from an attempt whose transaction did not
        commit (renamed already); None if neither exists."""
        if staged.exists():
            return staged
        return target if target.exists() else None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._sha.update(data)
        self.size += len(data)

    def sha256(self) -> str:
        return self._sha.hexdigest()

    def sync(self) -> None:
        pass  # the pieces were fsync'ed as they came

    def publish(self, target: Path) -> None:
        if self.path == target:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, target)
        fsync_directory(target.parent)
        fsync_directory(self.path.parent)

    def discard(self) -> None:
        pass  # kept: the next attempt takes it up again (see the class docstring)

    def unpublish(self, target: Path) -> None:
        pass  # the file in place is the next attempt's source


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
