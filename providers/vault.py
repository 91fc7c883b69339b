"""Encryption at rest for credential secrets: Fernet (AES-128-CBC + HMAC-SHA256) under rotating keys.

Keys come from ``settings.ENCRYPTION_KEYS``, newest first: the first one encrypts, every one decrypts.
With no keys configured, one key is generated once and kept in ``DATA_DIR/encryption_key`` (mode 0600).
That file's key also stays readable after ``ENCRYPTION_KEYS`` is set, so an installation can move
to configured keys and then run ``manage.py rotate_encryption_key``.

Each ciphertext is stored with the id of the key that wrote it (a short hash of the key, never
the key), so a missing key is named in the error instead of producing garbage: Fernet is
authenticated, so a wrong key can only fail, never decrypt to something else.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

KEY_FILE_NAME = "encryption_key"


class VaultError(Exception):
    """A secret cannot be encrypted or decrypted; the message says why and what to do."""


@dataclass(frozen=True)
class Keyring:
    """The usable keys, newest first, with their ids."""

    ids: tuple[str, ...]
    fernets: tuple[Fernet, ...]

    @property
    def current_id(self) -> str:
        return self.ids[0]

    def by_id(self, key_id: str) -> Fernet | None:
        for kid, fernet in zip(self.ids, self.fernets, strict=True):
            if kid == key_id:
                return fernet
        return None

    @property
    def multi(self) -> MultiFernet:
        return MultiFernet(list(self.fernets))


def key_id(key: str | bytes) -> str:
    """A short, stable, non-reversible name for a key."""
    raw = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(b"graphwright-key-id:" + raw.strip()).hexdigest()[:12]


def generate_key() -> str:
    return Fernet.generate_key().decode()


def _key_file() -> Path:
    return Path(settings.DATA_DIR) / KEY_FILE_NAME


def _file_key(create: bool) -> str | None:
    path = _key_file()
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting together must not each write a different key.
        try:
            with open(path, "x", encoding="ascii") as handle:
                handle.write(generate_key())
            path.chmod(0o600)
        except FileExistsError:
            pass
    return path.read_text(encoding="ascii").strip() or None


def _fernet(key: str, where: str) -> Fernet:
    try:
        return Fernet(key.strip().encode())
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            f"{where} holds an invalid encryption key: expected 32 url-safe base64-encoded bytes "
            f"(make one with `manage.py rotate_encryption_key --generate-key`)."
        ) from exc


_cache: dict[tuple, Keyring] = {}
_cache_lock = threading.Lock()


def keyring() -> Keyring:
    """The current keys, newest first (cached per settings value, so tests can swap keys)."""
    configured = tuple(k.strip() for k in (getattr(settings, "ENCRYPTION_KEYS", None) or []) if k and k.strip())
    cache_key = (configured, str(settings.DATA_DIR))
    with _cache_lock:
        ring = _cache.get(cache_key)
        if ring is not None:
            return ring
        keys: list[tuple[str, Fernet]] = [
            (key_id(k), _fernet(k, f"ENCRYPTION_KEYS[{i}]")) for i, k in enumerate(configured)
        ]
        file_key = _file_key(create=not configured)
        if file_key and key_id(file_key) not in {kid for kid, _ in keys}:
            keys.append((key_id(file_key), _fernet(file_key, str(_key_file()))))
        ring = Keyring(ids=tuple(k for k, _ in keys), fernets=tuple(f for _, f in keys))
        _cache[cache_key] = ring
        return ring


def current_key_id() -> str:
    return keyring().current_id


def encrypt(plaintext: str) -> tuple[str, str]:
    """Encrypt ``plaintext`` under the newest key. Returns ``(token, key_id)``."""
    ring = keyring()
    token = ring.fernets[0].encrypt(plaintext.encode("utf-8")).decode("ascii")
    return token, ring.current_id


def decrypt(token: str, stored_key_id: str = "") -> str:
    """Decrypt a token written by :func:`encrypt`; raise :class:`VaultError` when no key fits."""
    if not token:
        return ""
    ring = keyring()
    fernet = ring.by_id(stored_key_id) if stored_key_id else None
    try:
        data = (fernet or ring.multi).decrypt(token.encode("ascii"))
    except (InvalidToken, ValueError, UnicodeEncodeError) as exc:
        if stored_key_id and fernet is None:
            raise VaultError(
                f"The secret was encrypted with key {stored_key_id}, which is not among the configured "
                f"ENCRYPTION_KEYS ({', '.join(ring.ids)}). Add that key back (after the newer ones) to read it."
            ) from exc
        raise VaultError(
            f"The secret cannot be decrypted with key {stored_key_id or '(unknown)'}: the key is wrong "
            f"or the stored value was altered."
        ) from exc
    return data.decode("utf-8")


def reencrypt(token: str, stored_key_id: str = "") -> tuple[str, str]:
    """The same secret encrypted under the newest key: ``(token, key_id)``. Raises :class:`VaultError`."""
    return encrypt(decrypt(token, stored_key_id))


def reset_cache() -> None:
    with _cache_lock:
        _cache.clear()


def check_encryption_keys(app_configs: object = None, **kwargs: object) -> list:
    """System check: every configured key must be a valid Fernet key (``manage.py check`` fails otherwise)."""
    from django.core.checks import Error

    errors = []
    for index, key in enumerate(getattr(settings, "ENCRYPTION_KEYS", None) or []):
        try:
            Fernet(key.strip().encode())
        except (ValueError, TypeError):
            errors.append(
                Error(
                    f"ENCRYPTION_KEYS[{index}] is not a valid Fernet key (32 url-safe base64-encoded bytes).",
                    hint="Generate one with `manage.py rotate_encryption_key --generate-key`.",
                    id="providers.E001",
                )
            )
    return errors
