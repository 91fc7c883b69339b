"""Encryption at rest: ciphertext only in the database, rotation, clear errors for a wrong key."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from accounts.models import AuditLog
from providers import vault
from providers.choices import CredentialKind
from providers.credentials import credential_create, credential_secret
from providers.models import Credential

PLAINTEXT = "sk-live-0123456789abcdefSECRET"


def _raw_row(pk: int) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_ciphertext, key_id FROM providers_credential WHERE id = %s", [pk])
        return cursor.fetchone()


def test_encrypt_decrypt_round_trip_names_the_key(keys):
    token, key_id = vault.encrypt("hello")
    assert token != "hello" and "hello" not in token
    assert key_id == vault.key_id(keys[0]) and keys[0] not in key_id
    assert vault.decrypt(token, key_id) == "hello"


def test_generated_key_is_kept_in_data_dir(settings, tmp_path):
    settings.ENCRYPTION_KEYS = []
    settings.DATA_DIR = tmp_path
    token, key_id = vault.encrypt("kept")
    key_file = tmp_path / vault.KEY_FILE_NAME
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert key_id == vault.key_id(key_file.read_text())
    vault.reset_cache()  # a new process reads the same file
    assert vault.decrypt(token, key_id) == "kept"


def test_invalid_configured_key_fails_fast(settings):
    settings.ENCRYPTION_KEYS = ["not-a-fernet-key"]
    with pytest.raises(ImproperlyConfigured, match=r"ENCRYPTION_KEYS\[0\].*invalid encryption key"):
        vault.encrypt("x")


@pytest.mark.django_db
def test_stored_column_never_holds_the_plaintext(keys, workspace, user):
    credential = credential_create(
        workspace=workspace, user=user, name="openai", kind=CredentialKind.LLM, provider="openai", secret=PLAINTEXT
    )
    ciphertext, key_id = _raw_row(credential.pk)
    assert PLAINTEXT not in ciphertext
    assert "0123456789" not in ciphertext
    assert key_id == vault.key_id(keys[0])
    assert credential.secret_mask == "sk-…CRET"
    assert credential_secret(Credential.objects.get(pk=credential.pk)) == PLAINTEXT
    # nothing else in the row or the audit log holds it either
    assert PLAINTEXT not in str(Credential.objects.filter(pk=credential.pk).values().get())
    assert all(PLAINTEXT not in str(entry.data) for entry in AuditLog.objects.all())


@pytest.mark.django_db
def test_wrong_key_gives_a_clear_error_not_garbage(settings, keys, workspace, user):
    credential = credential_create(
        workspace=workspace, user=user, name="api", kind=CredentialKind.HTTP_BEARER, secret=PLAINTEXT
    )
    settings.ENCRYPTION_KEYS = [keys[1]]  # the old key is gone
    with pytest.raises(vault.VaultError, match="not among the configured ENCRYPTION_KEYS"):
        credential_secret(credential)
    # the right key id but a tampered token: authenticated encryption refuses it
    settings.ENCRYPTION_KEYS = [keys[0]]
    credential.secret_ciphertext = credential.secret_ciphertext[:-6] + "AAAAAA"
    with pytest.raises(vault.VaultError, match="key is wrong or the stored value was altered"):
        credential_secret(credential)


@pytest.mark.django_db
def test_rotation_reencrypts_everything_and_old_keys_keep_working_meanwhile(settings, keys, workspace, user):
    secrets = {f"cred{i}": f"token-number-{i}-abcdefghijklmnop" for i in range(7)}
    for name, secret in secrets.items():
        credential_create(workspace=workspace, user=user, name=name, kind=CredentialKind.HTTP_BEARER, secret=secret)
    old_id, new_id = vault.key_id(keys[0]), vault.key_id(keys[1])
    settings.ENCRYPTION_KEYS = [keys[1], keys[0]]  # new key first, old one kept
    # before rotation, the old secrets still read and new ones use the new key
    assert all(credential_secret(c) == secrets[c.name] for c in Credential.objects.all())
    fresh = credential_create(
        workspace=workspace, user=user, name="fresh", kind=CredentialKind.HTTP_BEARER, secret="fresh-secret-value-123"
    )
    assert fresh.key_id == new_id
    out = io.StringIO()
    call_command("rotate_encryption_key", "--batch-size", "3", stdout=out)
    assert "Re-encrypted 7 secrets" in out.getvalue()
    assert set(Credential.objects.values_list("key_id", flat=True)) == {new_id}
    assert AuditLog.objects.filter(action="credential.rotated").count() == 7
    settings.ENCRYPTION_KEYS = [keys[1]]  # the old key can now go
    for credential in Credential.objects.exclude(name="fresh"):
        assert credential_secret(credential) == secrets[credential.name]
        assert old_id != credential.key_id
    out = io.StringIO()
    call_command("rotate_encryption_key", stdout=out)  # running again is a no-op
    assert "Re-encrypted 0 secrets" in out.getvalue()


@pytest.mark.django_db
def test_rotation_reports_secrets_no_key_can_read(settings, keys, workspace, user):
    credential_create(workspace=workspace, user=user, name="lost", kind=CredentialKind.HTTP_BEARER, secret="abc123456")
    settings.ENCRYPTION_KEYS = [keys[1]]
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 secrets could not be decrypted"):
        call_command("rotate_encryption_key", stdout=io.StringIO(), stderr=err)
    assert "lost" in err.getvalue()


def test_generate_key_prints_a_usable_key(settings):
    out = io.StringIO()
    call_command("rotate_encryption_key", "--generate-key", stdout=out)
    settings.ENCRYPTION_KEYS = [out.getvalue().strip()]
    token, _ = vault.encrypt("x")
    assert vault.decrypt(token) == "x"


def test_system_check_flags_a_bad_key(settings):
    from django.core import checks

    settings.ENCRYPTION_KEYS = [vault.generate_key(), "short"]
    errors = [e for e in checks.run_checks(tags=[checks.Tags.security]) if e.id == "providers.E001"]
    assert len(errors) == 1 and "ENCRYPTION_KEYS[1]" in errors[0].msg
