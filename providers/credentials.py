"""Credential services: the only code that writes a credential or reads its secret.

The secret is write-only: create and update take it, nothing returns it except
:func:`credential_secret`, which nodes call at the moment they use it. Everything shown to a
person (admin, API, pages, audit log, run events) uses ``secret_mask``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.audit import audit
from accounts.choices import Action
from accounts.models import User, Workspace
from accounts.permissions import require

from . import vault
from .choices import CredentialKind, Provider
from .models import Credential

logger = logging.getLogger(__name__)

HTTP_KINDS = frozenset({CredentialKind.HTTP_BEARER, CredentialKind.HTTP_BASIC, CredentialKind.HTTP_HEADER})
# Providers that run without an API key.
KEYLESS_PROVIDERS = frozenset({Provider.LOCAL, Provider.OLLAMA})
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
EDITABLE_FIELDS = ("name", "kind", "provider", "base_url", "default_model", "extra", "is_active")


class CredentialNotFound(LookupError):
    """No active credential matches the reference; the message is fit for a failed node."""


def mask_secret(value: str) -> str:
    """A hint that tells secrets apart without revealing them: ``sk-…a1b2``."""
    value = value or ""
    if not value:
        return ""
    if len(value) >= 20:
        return f"{value[:3]}…{value[-4:]}"
    if len(value) >= 10:
        return f"…{value[-2:]}"
    return "••••"


def credential_secret(credential: Credential) -> str:
    """The decrypted secret. Raises ``vault.VaultError`` with a clear message when no key fits."""
    return vault.decrypt(credential.secret_ciphertext, credential.key_id)


# -- validation -------------------------------------------------------------------------------------
def credential_validate(
    *,
    workspace: Workspace | int,
    name: str,
    kind: str,
    provider: str = "",
    base_url: str = "",
    extra: dict[str, Any] | None = None,
    secret: str | None = None,
    has_secret: bool = False,
    instance_pk: int | None = None,
) -> None:
    """Raise ``ValidationError`` with field messages for anything wrong. ``secret=None`` keeps the stored one."""
    errors: dict[str, list[str]] = {}
    workspace_id = workspace if isinstance(workspace, int) else workspace.pk
    extra = extra if extra is not None else {}
    name = (name or "").strip()
    if not name:
        errors.setdefault("name", []).append("A name is required.")
    elif len(name) > 100:
        errors.setdefault("name", []).append("Use at most 100 characters.")
    elif Credential.objects.filter(workspace_id=workspace_id, name=name).exclude(pk=instance_pk).exists():
        errors.setdefault("name", []).append(f"A credential named {name!r} already exists in this workspace.")
    if kind not in CredentialKind.values:
        errors.setdefault("kind", []).append(f"Choose one of: {', '.join(CredentialKind.values)}.")
    if provider and provider not in Provider.values:
        errors.setdefault("provider", []).append(f"Choose one of: {', '.join(Provider.values)}.")
    if not isinstance(extra, dict):
        errors.setdefault("extra", []).append("Must be a JSON object.")
        extra = {}
    effective_has_secret = bool(secret) if secret else has_secret
    if kind == CredentialKind.LLM:
        if not provider:
            errors.setdefault("provider", []).append("Pick the LLM provider.")
        elif provider not in KEYLESS_PROVIDERS and not effective_has_secret:
            errors.setdefault("secret", []).append("This provider needs an API key.")
    elif kind in CredentialKind.values and not effective_has_secret:
        errors.setdefault("secret", []).append("A secret is required.")
    if kind == CredentialKind.HTTP_BASIC and not str(extra.get("username") or "").strip():
        errors.setdefault("extra", []).append('Basic auth needs a username: {"username": "..."}.')
    if kind == CredentialKind.HTTP_HEADER and not HEADER_NAME.match(str(extra.get("header_name") or "")):
        errors.setdefault("extra", []).append(
            'A custom header needs a valid header name: {"header_name": "X-Api-Key"}.'
        )
    if kind == CredentialKind.DATABASE and secret:
        from .external_db import ExternalDatabaseError, parse_database_url

        try:
            parse_database_url(secret)
        except ExternalDatabaseError as exc:
            errors.setdefault("secret", []).append(str(exc))
    if base_url and not re.match(r"^https?://[^\s/]+", base_url):
        errors.setdefault("base_url", []).append("Use an http:// or https:// URL.")
    if errors:
        raise ValidationError(errors)


def _check(user: User | None, workspace: Workspace | int, check_permission: bool) -> None:
    if check_permission:
        require(user, workspace, Action.EDIT)


def _check_app_database_flag(user: User | None, extra: dict[str, Any], before: dict[str, Any] | None = None) -> None:
    """Only staff (or the system) may let workflows query Graphwright's own database through a credential."""
    wants = bool(extra.get("allow_app_database"))
    had = bool((before or {}).get("allow_app_database"))
    if wants and not had and user is not None and not getattr(user, "is_staff", False):
        raise ValidationError({"extra": ["Only an administrator may allow access to Graphwright's own database."]})


def _store_secret(credential: Credential, secret: str) -> None:
    if secret:
        credential.secret_ciphertext, credential.key_id = vault.encrypt(secret)
    else:
        credential.secret_ciphertext, credential.key_id = "", ""
    credential.secret_mask = mask_secret(secret)


# -- writes ---------------------------------------------------------------------------------------
@transaction.atomic
def credential_create(
    *,
    workspace: Workspace,
    user: User | None,
    name: str,
    kind: str,
    secret: str = "",
    provider: str = "",
    base_url: str = "",
    default_model: str = "",
    extra: dict[str, Any] | None = None,
    is_active: bool = True,
    check_permission: bool = True,
) -> Credential:
    """Create a credential; its secret is encrypted before it reaches the database."""
    _check(user, workspace, check_permission)
    name = (name or "").strip()
    extra = dict(extra) if isinstance(extra, dict) else ({} if extra is None else extra)
    credential_validate(
        workspace=workspace, name=name, kind=kind, provider=provider, base_url=base_url, extra=extra, secret=secret
    )
    _check_app_database_flag(user, extra)
    credential = Credential(
        workspace=workspace,
        name=name,
        kind=kind,
        provider=provider,
        base_url=base_url,
        default_model=default_model,
        extra=extra,
        is_active=is_active,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    _store_secret(credential, secret)
    try:
        with transaction.atomic():
            credential.save()
    except IntegrityError as exc:  # a concurrent create with the same name
        raise ValidationError({"name": [f"A credential named {name!r} already exists in this workspace."]}) from exc
    audit(
        action="credential.created",
        actor=user,
        workspace=workspace,
        target=credential,
        data={"name": name, "kind": kind, "mask": credential.secret_mask},
    )
    return credential


@transaction.atomic
def credential_update(
    *,
    credential: Credential,
    user: User | None,
    secret: str | None = None,
    check_permission: bool = True,
    **fields: Any,
) -> Credential:
    """Change fields; a blank or missing ``secret`` keeps the stored one, a new one replaces it."""
    _check(user, credential.workspace_id, check_permission)
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationError({key: ["This field cannot be changed."] for key in sorted(unknown)})
    values = {key: getattr(credential, key) for key in EDITABLE_FIELDS}
    values.update(fields)
    values["name"] = (values["name"] or "").strip()
    values["extra"] = dict(values["extra"]) if isinstance(values["extra"], dict) else values["extra"] or {}
    credential_validate(
        workspace=credential.workspace_id,
        name=values["name"],
        kind=values["kind"],
        provider=values["provider"],
        base_url=values["base_url"],
        extra=values["extra"],
        secret=secret or None,
        has_secret=bool(credential.secret_ciphertext),
        instance_pk=credential.pk,
    )
    _check_app_database_flag(user, values["extra"], credential.extra)
    changed = sorted(key for key in EDITABLE_FIELDS if getattr(credential, key) != values[key])
    for key in EDITABLE_FIELDS:
        setattr(credential, key, values[key])
    if secret:
        _store_secret(credential, secret)
        changed.append("secret")
    try:
        with transaction.atomic():
            credential.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"name": [f"A credential named {values['name']!r} already exists in this workspace."]}
        ) from exc
    if changed:
        audit(
            action="credential.changed",
            actor=user,
            workspace=credential.workspace_id,
            target=credential,
            data={"fields": changed, "mask": credential.secret_mask},
        )
    return credential


@transaction.atomic
def credential_delete(*, credential: Credential, user: User | None, check_permission: bool = True) -> None:
    _check(user, credential.workspace_id, check_permission)
    audit(
        action="credential.deleted",
        actor=user,
        workspace=credential.workspace_id,
        target=credential,
        data={"name": credential.name, "kind": credential.kind},
    )
    credential.delete()


def credential_rotate(*, credential: Credential) -> bool:
    """Re-encrypt the secret under the newest key. Returns False when it already was. Caller holds the row lock."""
    current = vault.current_key_id()
    if not credential.secret_ciphertext or credential.key_id == current:
        return False
    old_key_id = credential.key_id
    credential.secret_ciphertext, credential.key_id = vault.reencrypt(credential.secret_ciphertext, credential.key_id)
    Credential.objects.filter(pk=credential.pk).update(
        secret_ciphertext=credential.secret_ciphertext, key_id=credential.key_id
    )
    audit(
        action="credential.rotated",
        workspace=credential.workspace_id,
        target=credential,
        data={"from_key": old_key_id, "to_key": credential.key_id},
    )
    return True


# -- use ------------------------------------------------------------------------------------------
def credential_resolve(*, workspace_id: int | None, ref: str | int, kinds: tuple[str, ...] = ()) -> Credential:
    """The active credential named or numbered ``ref`` in the workspace. Raises :class:`CredentialNotFound`."""
    if workspace_id is None:
        raise CredentialNotFound("Credentials are only available inside a workspace run.")
    if ref is None or (isinstance(ref, str) and not ref.strip()):
        raise CredentialNotFound("No credential given.")
    queryset = Credential.objects.filter(workspace_id=workspace_id)
    credential = None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
        credential = queryset.filter(pk=int(ref)).first()
    if credential is None and isinstance(ref, str):
        credential = queryset.filter(name=ref.strip()).first()
    if credential is None:
        raise CredentialNotFound(f"Credential {ref!r} does not exist in this workspace.")
    if not credential.is_active:
        raise CredentialNotFound(f"Credential {credential.name!r} is disabled.")
    if kinds and credential.kind not in kinds:
        wanted = " or ".join(CredentialKind(k).label for k in kinds)
        raise CredentialNotFound(
            f"Credential {credential.name!r} is a {credential.get_kind_display()}; this node needs a {wanted}."
        )
    return credential


def credential_mark_used(*, credential: Credential, run_id: int | None, node_id: str, user: User | None = None) -> None:
    """Audit that a run used the credential (once per node attempt)."""
    audit(
        action="credential.used",
        actor=user,
        workspace=credential.workspace_id,
        target=credential,
        data={"run_id": run_id, "node_id": node_id, "mask": credential.secret_mask},
    )


def credential_test(*, credential: Credential, user: User | None = None, check_permission: bool = True) -> Credential:
    """Check the credential against its service and record ``last_tested_at/ok/message``."""
    _check(user, credential.workspace_id, check_permission)
    started = time.monotonic()
    try:
        ok, message = _run_test(credential)
    except vault.VaultError as exc:
        ok, message = False, str(exc)
    except Exception as exc:  # a test must record its failure, whatever it was
        logger.warning("Credential test %s failed: %s", credential.pk, type(exc).__name__)
        ok, message = False, f"{type(exc).__name__}: {exc}"
    message = _scrub(message, credential)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    credential.last_tested_at = timezone.now()
    credential.last_test_ok = ok
    credential.last_test_message = message[:500]
    Credential.objects.filter(pk=credential.pk).update(
        last_tested_at=credential.last_tested_at,
        last_test_ok=ok,
        last_test_message=credential.last_test_message,
    )
    audit(
        action="credential.tested",
        actor=user,
        workspace=credential.workspace_id,
        target=credential,
        data={"ok": ok, "elapsed_ms": elapsed_ms},
    )
    return credential


def _scrub(message: str, credential: Credential) -> str:
    """Make sure a test message never echoes the secret back."""
    try:
        secret = credential_secret(credential)
    except vault.VaultError:
        return message
    if secret and len(secret) >= 4 and secret in message:
        message = message.replace(secret, credential.secret_mask or "…")
    return message


def http_auth_headers(credential: Credential) -> dict[str, str]:
    """The request headers that authenticate with an HTTP credential."""
    import base64

    secret = credential_secret(credential)
    if credential.kind == CredentialKind.HTTP_BEARER:
        return {"Authorization": f"Bearer {secret}"}
    if credential.kind == CredentialKind.HTTP_BASIC:
        username = str(credential.extra.get("username") or "")
        token = base64.b64encode(f"{username}:{secret}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}
    if credential.kind == CredentialKind.HTTP_HEADER:
        return {str(credential.extra.get("header_name")): secret}
    raise CredentialNotFound(f"Credential {credential.name!r} is not an HTTP credential.")


def _run_test(credential: Credential) -> tuple[bool, str]:
    if credential.kind in HTTP_KINDS:
        return _test_http(credential)
    if credential.kind == CredentialKind.DATABASE:
        return _test_database(credential)
    if credential.kind == CredentialKind.LLM:
        try:
            from providers.llm import credential_test_llm  # written with the LLM providers (issue 5)
        except ImportError:
            return False, "LLM credential tests are not available yet (providers.llm.credential_test_llm is missing)."
        return credential_test_llm(credential)
    return False, f"Unknown credential kind {credential.kind!r}."


def _test_http(credential: Credential) -> tuple[bool, str]:
    import httpx

    from .ssrf import BlockedDestination, guarded_client, unwrap_blocked

    if not credential.base_url:
        return False, "Set a base URL to test this credential against."
    headers = http_auth_headers(credential)
    try:
        with guarded_client(timeout=10.0, follow_redirects=True) as client:
            response = client.get(credential.base_url, headers=headers)
    except BlockedDestination as exc:
        return False, str(exc)
    except httpx.HTTPError as exc:
        blocked = unwrap_blocked(exc)
        return False, str(blocked) if blocked else f"Request failed: {type(exc).__name__}: {exc}"
    if response.status_code in (401, 403):
        return False, f"Rejected: HTTP {response.status_code} {response.reason_phrase}"
    if response.status_code >= 500:
        return False, f"Server error: HTTP {response.status_code} {response.reason_phrase}"
    return True, f"HTTP {response.status_code} {response.reason_phrase}"


def _test_database(credential: Credential) -> tuple[bool, str]:
    from .external_db import ExternalDatabaseError, connect

    try:
        with connect(credential_secret(credential), read_only=True, connect_timeout=10) as db:
            cursor = db.connection.cursor()
            cursor.execute("SELECT 1")
            value = cursor.fetchone()
            db.connection.rollback()
    except ExternalDatabaseError as exc:
        return False, str(exc)
    except Exception as exc:
        return False, f"Query failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if not value or value[0] != 1:
        return False, "SELECT 1 returned something unexpected."
    return True, f"Connected ({'PostgreSQL' if db.vendor == 'postgresql' else 'SQLite'})."
