"""KeyStore: encrypted keys at rest, file modes, atomic no-clobber creation, passphrases."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from metrocloud.domain.errors import Conflict, InvalidInput, NotFound, VerificationError
from metrocloud.trust import KeyAlgorithm, KeyStore, PrivateKey
from metrocloud.trust._files import write_new_file

PASSPHRASE = b"store-passphrase-for-tests"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_load_or_create_writes_encrypted_key_with_private_modes(tmp_path: Path) -> None:
    directory = tmp_path / "keys" / "node"
    store = KeyStore(directory, PASSPHRASE)
    assert not store.exists("node")
    key = store.load_or_create("node")
    path = directory / "node.key.pem"
    assert store.exists("node") and path.is_file()
    assert _mode(directory) == 0o700
    assert _mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert PrivateKey.from_pem(path.read_bytes(), PASSPHRASE).key_id == key.key_id
    # no temporary files are left behind
    assert sorted(p.name for p in directory.iterdir()) == ["node.key.pem"]


def test_modes_do_not_depend_on_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        KeyStore(tmp_path / "k", PASSPHRASE).load_or_create("a")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k") == 0o700
    assert _mode(tmp_path / "k" / "a.key.pem") == 0o600


def test_existing_directory_mode_is_left_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    KeyStore(tmp_path, PASSPHRASE).load_or_create("a")
    assert _mode(tmp_path) == 0o755
    assert _mode(tmp_path / "a.key.pem") == 0o600


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_load_or_create_is_stable(tmp_path: Path, algorithm: KeyAlgorithm) -> None:
    store = KeyStore(tmp_path, PASSPHRASE)
    first = store.load_or_create("node", algorithm)
    again = KeyStore(tmp_path, PASSPHRASE).load_or_create("node", algorithm)
    loaded = store.load("node")
    assert first.key_id == again.key_id == loaded.key_id
    assert loaded.algorithm is algorithm
    first.public_key.verify(loaded.sign(b"x"), b"x")


def test_algorithm_mismatch_is_a_conflict(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, PASSPHRASE)
    store.load_or_create("node", KeyAlgorithm.ED25519)
    with pytest.raises(Conflict, match=r"is ed25519, requested ecdsa-p256-sha256"):
        store.load_or_create("node", KeyAlgorithm.ECDSA_P256)


def test_load_missing_key(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no key 'absent'"):
        KeyStore(tmp_path, PASSPHRASE).load("absent")


def test_wrong_store_passphrase(tmp_path: Path) -> None:
    KeyStore(tmp_path, PASSPHRASE).load_or_create("node")
    with pytest.raises(VerificationError, match="wrong passphrase"):
        KeyStore(tmp_path, b"another passphrase").load("node")
    with pytest.raises(VerificationError, match="wrong passphrase"):
        KeyStore(tmp_path, b"another passphrase").load_or_create("node")


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "a..b", "x" * 101, "é"])
def test_key_names_cannot_escape_the_directory(tmp_path: Path, name: str) -> None:
    store = KeyStore(tmp_path / "store", PASSPHRASE)
    with pytest.raises(InvalidInput, match="key name"):
        store.load_or_create(name)
    assert not (tmp_path / "store").exists()


def test_concurrent_creator_wins_and_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If another process publishes the key between our check and our write, we load theirs."""
    store = KeyStore(tmp_path, PASSPHRASE)
    theirs = PrivateKey.generate()
    real_generate = PrivateKey.generate

    def racing_generate(algorithm: KeyAlgorithm = KeyAlgorithm.ED25519) -> PrivateKey:
        (tmp_path / "node.key.pem").write_bytes(theirs.to_pem(PASSPHRASE))
        return real_generate(algorithm)

    monkeypatch.setattr(PrivateKey, "generate", staticmethod(racing_generate))
    assert store.load_or_create("node").key_id == theirs.key_id
    assert store.load("node").key_id == theirs.key_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key.pem"]


def test_write_new_file_never_replaces(tmp_path: Path) -> None:
    target = tmp_path / "f"
    assert write_new_file(target, b"first") is True
    assert write_new_file(target, b"second") is False
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_repr_hides_passphrase(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, PASSPHRASE)
    assert PASSPHRASE.decode() not in repr(store)
    assert repr(store) == f"KeyStore(directory={str(tmp_path)!r})"


def test_empty_passphrase_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="non-empty"):
        KeyStore(tmp_path, b"")


# -- passphrase_from ---------------------------------------------------------------------


def test_passphrase_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_PASSPHRASE", "from the secret manager")
    assert KeyStore.passphrase_from(tmp_path, "MY_PASSPHRASE") == b"from the secret manager"
    assert not (tmp_path / "passphrase").exists()


def test_passphrase_from_default_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METROCLOUD_KEY_PASSPHRASE", "env-pass")
    assert KeyStore.passphrase_from(tmp_path) == b"env-pass"


def test_passphrase_from_empty_env_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METROCLOUD_KEY_PASSPHRASE", "")
    with pytest.raises(InvalidInput, match="set but empty"):
        KeyStore.passphrase_from(tmp_path)


def test_passphrase_file_created_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METROCLOUD_KEY_PASSPHRASE", raising=False)
    directory = tmp_path / "keys"
    first = KeyStore.passphrase_from(directory)
    path = directory / "passphrase"
    assert _mode(path) == 0o600 and _mode(directory) == 0o700
    assert len(first) == 43  # 32 random bytes, base64url
    assert KeyStore.passphrase_from(directory) == first
    # the file can be used to open keys written with it, across store instances
    key = KeyStore(directory, first).load_or_create("node")
    assert KeyStore(directory, KeyStore.passphrase_from(directory)).load("node").key_id == (
        key.key_id
    )
    assert KeyStore.passphrase_from(tmp_path / "elsewhere") != first


def test_passphrase_file_with_loose_mode_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METROCLOUD_KEY_PASSPHRASE", raising=False)
    KeyStore.passphrase_from(tmp_path)
    (tmp_path / "passphrase").chmod(0o644)
    with pytest.raises(InvalidInput, match=r"mode 0o644; expected 0o600"):
        KeyStore.passphrase_from(tmp_path)


def test_truncated_passphrase_file_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METROCLOUD_KEY_PASSPHRASE", raising=False)
    path = tmp_path / "passphrase"
    path.write_bytes(b"short\n")
    path.chmod(0o600)
    with pytest.raises(InvalidInput, match="holds 5 bytes"):
        KeyStore.passphrase_from(tmp_path)
