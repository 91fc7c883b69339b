from __future__ import annotations

from django.conf import settings
from django.db import models

from accounts.models import Workspace, WorkspaceScopedQuerySet

from .choices import CredentialKind, Provider


class CredentialQuerySet(WorkspaceScopedQuerySet):
    def active(self) -> CredentialQuerySet:
        return self.filter(is_active=True)


class Credential(models.Model):
    """A secret for an outside service, encrypted at rest (Fernet) under the key named by ``key_id``.

    ``secret_ciphertext`` never holds plaintext; ``secret_mask`` (``sk-…a1b2``) is all anyone sees.
    ``extra`` keeps non-secret settings (a basic-auth username, a header name).
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="credentials")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=CredentialKind.choices)
    provider = models.CharField(max_length=32, choices=Provider.choices, blank=True)
    base_url = models.URLField(max_length=500, blank=True)
    default_model = models.CharField(max_length=200, blank=True)
    extra = models.JSONField(default=dict, blank=True)
    secret_ciphertext = models.TextField(blank=True)
    key_id = models.CharField(max_length=32, blank=True)
    secret_mask = models.CharField(max_length=40, blank=True)
    is_active = models.BooleanField(default=True)
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_message = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CredentialQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_credential_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.secret_mask or self.get_kind_display()})"


class Collection(models.Model):
    """A searchable set of documents; chunks are embedded and indexed with FAISS on disk."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="collections")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    embedding_model = models.CharField(max_length=200, default="all-MiniLM-L6-v2")
    chunk_size = models.PositiveIntegerField(default=800, help_text="Characters per chunk.")
    chunk_overlap = models.PositiveIntegerField(default=100)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WorkspaceScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_collection_name")]

    def __str__(self) -> str:
        return self.name


class DocumentQuerySet(WorkspaceScopedQuerySet):
    workspace_path = "collection__workspace"


class Document(models.Model):
    """A text added to a collection, with free-form metadata and where it came from."""

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=300, blank=True)
    source = models.CharField(max_length=1000, blank=True)
    text = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DocumentQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.title or self.source or f"Document {self.pk}"


class Chunk(models.Model):
    """A piece of a document with its embedding (float32 bytes), so indexes rebuild without re-encoding."""

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    text = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)
    embedding = models.BinaryField()

    class Meta:
        ordering = ["document", "index"]

    def __str__(self) -> str:
        return f"{self.document} #{self.index}"


class TokenUsageQuerySet(WorkspaceScopedQuerySet):
    pass


class TokenUsage(models.Model):
    """The token ledger: one row per LLM call."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="token_usage")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="token_usage"
    )
    run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="token_usage")
    node_id = models.CharField(max_length=64, blank=True)
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=200)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = TokenUsageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}: {self.input_tokens}+{self.output_tokens}"


class ConversationMemory(models.Model):
    """Agent conversation memory, kept per ``session`` key across runs."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    session = models.CharField(max_length=200)
    messages = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "session"], name="unique_memory_session")]

    def __str__(self) -> str:
        return self.session
