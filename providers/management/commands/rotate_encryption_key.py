"""Re-encrypt every credential secret under the newest key in ``ENCRYPTION_KEYS``.

Rotation without downtime:
1. ``manage.py rotate_encryption_key --generate-key`` prints a new key.
2. Put it first in ``ENCRYPTION_KEYS`` (keep the old keys after it) and restart: new secrets use the
   new key, old ones still decrypt.
3. ``manage.py rotate_encryption_key`` re-encrypts the rest, batch by batch, each row under a lock so
   a concurrent edit is never overwritten.
4. Once it reports nothing left, the old keys may be removed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from providers import vault
from providers.credentials import credential_rotate
from providers.models import Credential


class Command(BaseCommand):
    help = "Re-encrypt every credential secret under the newest encryption key (old keys keep working meanwhile)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=100, help="Rows re-encrypted per transaction.")
        parser.add_argument("--generate-key", action="store_true", help="Print a new key and exit.")
        parser.add_argument("--dry-run", action="store_true", help="Count the secrets to re-encrypt; change nothing.")

    def handle(self, *args: Any, batch_size: int, generate_key: bool, dry_run: bool, **options: Any) -> None:
        if generate_key:
            self.stdout.write(vault.generate_key())
            return
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        current = vault.current_key_id()
        stale = Credential.objects.exclude(secret_ciphertext="").exclude(key_id=current)
        if dry_run:
            self.stdout.write(f"{stale.count()} secrets to re-encrypt under key {current}.")
            return
        rotated = failed = 0
        last_pk = 0
        while True:
            ids = list(stale.filter(pk__gt=last_pk).order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            last_pk = ids[-1]
            with transaction.atomic():
                for credential in Credential.objects.select_for_update().filter(pk__in=ids).order_by("pk"):
                    try:
                        rotated += credential_rotate(credential=credential)
                    except vault.VaultError as exc:
                        failed += 1
                        self.stderr.write(f"Credential {credential.pk} ({credential.name}): {exc}")
        self.stdout.write(f"Re-encrypted {rotated} secrets under key {current}; {failed} could not be read.")
        if failed:
            raise CommandError(f"{failed} secrets could not be decrypted with any configured key.")
