"""``manage.py seed_demo``: the demo user, a demo database credential and collection, and the sample workflows.

Idempotent: whatever already exists is left as it is, so running it twice changes nothing. Each sample
workflow is a graphwright/v1 file in ``workflows/demo/`` loaded through ``workflow_import``; a file whose
node types are not available (yet) is skipped with a warning instead of failing the whole seed.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import User, Workspace
from accounts.services import personal_workspace, user_create
from workflows.graph import validate_definition
from workflows.models import Workflow
from workflows.services import workflow_import

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password-1"  # noqa: S105 - a local demo account, printed on purpose
DEMO_DB_CREDENTIAL = "Demo SQLite"
DEMO_DB_URL = "sqlite:///demo/demo.sqlite3"  # relative: under DATA_DIR
# Loaded first: others refer to them by slug (the loop and subworkflow in batch_loop use process-item).
LOAD_FIRST = ("process_item.json",)


def demo_documents() -> list[tuple[str, dict[str, Any]]]:
    """The sample definitions as (file name, document), dependencies first."""
    files = sorted(DEMO_DIR.glob("*.json"), key=lambda p: (p.name not in LOAD_FIRST, p.name))
    return [(path.name, json.loads(path.read_text(encoding="utf-8"))) for path in files]


class Command(BaseCommand):
    help = "Create the demo user, its demo database and collection, and the sample workflows (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-collection", action="store_true", help="Skip the demo collection (no embeddings).")

    def handle(self, *args: Any, **options: Any) -> None:
        user, created = self._user()
        workspace = personal_workspace(user)
        self._database(workspace, user)
        if not options["no_collection"]:
            self._collection(workspace, user)
        imported, kept, skipped = self._workflows(workspace, user)
        self.stdout.write(
            f"Workflows: {imported} imported, {kept} already there, {skipped} skipped "
            f"(demo workspace “{workspace.name}”)."
        )
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"  Open {settings.SITE_URL}/ and sign in as:"))
        self.stdout.write(f"    username: {DEMO_USERNAME}")
        if created:
            self.stdout.write(f"    password: {DEMO_PASSWORD}")
        else:
            self.stdout.write(f"    password: {DEMO_PASSWORD} (unless you changed it)")
        self.stdout.write(f"  The admin is at {settings.SITE_URL}/admin/ with the same account.")

    def _user(self) -> tuple[User, bool]:
        user = User.objects.filter(username=DEMO_USERNAME).first()
        if user is not None:
            return user, False
        user = user_create(
            username=DEMO_USERNAME,
            password=DEMO_PASSWORD,
            email="demo@example.com",
            is_staff=True,
            is_superuser=True,
        )
        self.stdout.write(f"Created the demo user “{DEMO_USERNAME}”.")
        return user, True

    def _database(self, workspace: Workspace, user: User) -> None:
        """A SQLite file under DATA_DIR with the table the batch demo writes, and a credential naming it."""
        path = Path(settings.DATA_DIR) / "demo" / "demo.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS processed_items ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT, item TEXT NOT NULL, position INTEGER,"
                " created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )
        connection.close()
        try:
            from providers.credentials import credential_create
            from providers.models import Credential
        except ImportError:
            self.stdout.write(
                self.style.WARNING("Credentials are not available: skipped the demo database credential.")
            )
            return
        if Credential.objects.filter(workspace=workspace, name=DEMO_DB_CREDENTIAL).exists():
            return
        try:
            credential_create(
                workspace=workspace, user=user, name=DEMO_DB_CREDENTIAL, kind="database", secret=DEMO_DB_URL
            )
        except ValidationError as exc:
            self.stdout.write(self.style.WARNING(f"Demo database credential not created: {'; '.join(exc.messages)}"))
            return
        self.stdout.write(f"Created the credential “{DEMO_DB_CREDENTIAL}” ({DEMO_DB_URL}).")

    def _collection(self, workspace: Workspace, user: User) -> None:
        try:
            from providers.collections import demo_collection_seed
        except ImportError:
            self.stdout.write(self.style.WARNING("Collections are not available: skipped the demo collection."))
            return
        try:
            collection = demo_collection_seed(workspace=workspace, user=user)
        except Exception as exc:  # a missing embedding model must not stop the rest of the seed
            self.stdout.write(self.style.WARNING(f"Demo collection not seeded: {exc}"))
            return
        self.stdout.write(f"Demo collection “{collection.name}” is ready.")

    def _workflows(self, workspace: Workspace, user: User) -> tuple[int, int, int]:
        imported = kept = skipped = 0
        for filename, document in demo_documents():
            name = document.get("name") or filename
            if Workflow.objects.filter(workspace=workspace, name=name).exists():
                kept += 1
                continue
            missing = sorted({e.message for e in validate_definition(document) if e.code == "unknown_type"})
            if missing:
                skipped += 1
                self.stdout.write(self.style.WARNING(f"Skipped “{name}” ({filename}): {' '.join(missing)}"))
                continue
            try:
                with transaction.atomic():
                    workflow_import(workspace=workspace, user=user, document=document, publish=True)
            except ValidationError as exc:
                skipped += 1
                self.stdout.write(self.style.WARNING(f"Skipped “{name}” ({filename}): {'; '.join(exc.messages)}"))
                continue
            imported += 1
            self.stdout.write(f"Imported “{name}”.")
        return imported, kept, skipped
