from __future__ import annotations

from rest_framework import serializers

from accounts.models import Workspace
from providers.choices import CredentialKind, Provider
from providers.models import Collection, Credential, Document
from workflows.api.serializers import ObjectField, _VisibleWorkspaceField


class CredentialSerializer(serializers.ModelSerializer):
    """``secret`` is write-only; reads show ``secret_mask`` only."""

    workspace = _VisibleWorkspaceField(required=False)
    secret = serializers.CharField(
        write_only=True, required=False, allow_blank=False, max_length=10000, style={"input_type": "password"}
    )
    extra = ObjectField(required=False)
    base_url = serializers.CharField(
        max_length=500, required=False, allow_blank=True, help_text="http(s) URL or empty."
    )

    class Meta:
        model = Credential
        # The service reports a duplicate name with a clear field error; DRF's unique-together
        # validator would instead demand the optional workspace field.
        validators: list = []
        fields = [
            "id",
            "workspace",
            "name",
            "kind",
            "provider",
            "base_url",
            "default_model",
            "extra",
            "secret",
            "secret_mask",
            "is_active",
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "id",
            "secret_mask",
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
            "created_at",
            "updated_at",
        ]
        extra_kwargs = {"kind": {"choices": CredentialKind.choices}, "provider": {"choices": Provider.choices}}
        validators: list = []  # the services check name uniqueness within the workspace

    def validate(self, attrs):
        if self.instance is not None and "workspace" in attrs and attrs["workspace"].pk != self.instance.workspace_id:
            raise serializers.ValidationError({"workspace": ["A credential cannot move to another workspace."]})
        return attrs


class CredentialTestSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField(allow_blank=True)
    tested_at = serializers.DateTimeField(allow_null=True)


class CollectionSerializer(serializers.ModelSerializer):
    workspace = _VisibleWorkspaceField(required=False)
    document_count = serializers.SerializerMethodField()

    class Meta:
        model = Collection
        validators: list = []
        fields = [
            "id",
            "workspace",
            "name",
            "description",
            "embedding_model",
            "chunk_size",
            "chunk_overlap",
            "document_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "document_count", "created_at", "updated_at"]
        extra_kwargs = {"chunk_size": {"min_value": 50, "max_value": 20000}, "chunk_overlap": {"max_value": 10000}}
        validators: list = []  # the services check name uniqueness within the workspace

    def validate(self, attrs):
        size = attrs.get("chunk_size", getattr(self.instance, "chunk_size", 800))
        overlap = attrs.get("chunk_overlap", getattr(self.instance, "chunk_overlap", 100))
        if overlap >= size:
            raise serializers.ValidationError({"chunk_overlap": ["Must be smaller than chunk_size."]})
        if self.instance is not None and "workspace" in attrs and attrs["workspace"].pk != self.instance.workspace_id:
            raise serializers.ValidationError({"workspace": ["A collection cannot move to another workspace."]})
        return attrs

    def get_document_count(self, collection: Collection) -> int:
        count = getattr(collection, "document_total", None)
        return count if count is not None else collection.documents.count()


class DocumentSerializer(serializers.ModelSerializer):
    text = serializers.CharField(required=False, allow_blank=False, max_length=5_000_000)
    file = serializers.FileField(
        write_only=True, required=False, help_text="A text, Markdown or PDF file instead of `text`."
    )
    metadata = ObjectField(required=False)
    chunk_count = serializers.SerializerMethodField()

    class Meta:
        model = Document
        fields = ["id", "collection", "title", "source", "text", "file", "metadata", "chunk_count", "created_at"]
        read_only_fields = ["id", "collection", "chunk_count", "created_at"]

    def validate(self, attrs):
        if not attrs.get("text") and not attrs.get("file"):
            raise serializers.ValidationError({"text": ["Give the text, or upload a file."]})
        if attrs.get("text") and attrs.get("file"):
            raise serializers.ValidationError({"file": ["Give the text or a file, not both."]})
        return attrs

    def get_chunk_count(self, document: Document) -> int:
        return document.chunks.count()


class SearchSerializer(serializers.Serializer):
    query = serializers.CharField(max_length=2000)
    top_k = serializers.IntegerField(min_value=1, max_value=200, default=4)
    score_threshold = serializers.FloatField(required=False, allow_null=True, default=None)
    filters = ObjectField(required=False, allow_null=True, default=None, help_text="Metadata the chunks must match.")


class SearchHitSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    score = serializers.FloatField()
    text = serializers.CharField(allow_blank=True)
    metadata = serializers.DictField()
    source = serializers.CharField(allow_blank=True)
    title = serializers.CharField(allow_blank=True)
    document_id = serializers.IntegerField()
    chunk_id = serializers.IntegerField()
    chunk_index = serializers.IntegerField()


__all__ = ["Workspace"]
