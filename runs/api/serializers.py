from __future__ import annotations

import json
from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from runs.models import Artifact, NodeRun, Run, RunEvent


@extend_schema_field(OpenApiTypes.OBJECT)
class InputsField(serializers.JSONField):
    """A JSON object; in a multipart request, the same object as a JSON string."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            try:
                data = json.loads(data) if data.strip() else {}
            except ValueError:
                raise serializers.ValidationError("Expected a JSON object.") from None
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("Expected a JSON object.")
        return value


class RunCreateSerializer(serializers.Serializer):
    inputs = InputsField(required=False, default=dict)
    mode = serializers.ChoiceField(choices=["async", "sync"], default="async")
    callback_url = serializers.URLField(
        max_length=1000, required=False, allow_blank=True, default="", help_text="POSTed the run once it ends."
    )


class RunBatchSerializer(serializers.Serializer):
    inputs = serializers.ListField(
        child=InputsField(),
        allow_empty=False,
        help_text="One inputs object per run to start (at most GW_BATCH_MAX_RUNS, 1000 by default).",
    )
    callback_url = serializers.URLField(
        max_length=1000, required=False, allow_blank=True, default="", help_text="POSTed each run once it ends."
    )

    def validate_inputs(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from django.conf import settings

        if len(value) > settings.GW_BATCH_MAX_RUNS:
            raise serializers.ValidationError(f"At most {settings.GW_BATCH_MAX_RUNS} runs per batch.")
        return value


class NodeRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = NodeRun
        fields = [
            "id",
            "node_id",
            "node_type",
            "status",
            "attempt",
            "input",
            "output",
            "branch",
            "error",
            "logs",
            "reused_from",
            "started_at",
            "finished_at",
            "duration_ms",
        ]
        read_only_fields = fields


class RunSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.number", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    callback_url = serializers.CharField(read_only=True, help_text="Empty when the run has none.")

    class Meta:
        model = Run
        fields = [
            "id",
            "workspace",
            "workflow",
            "version",
            "status",
            "trigger",
            "inputs",
            "outputs",
            "error",
            "created_by",
            "parent",
            "rerun_of",
            "rerun_from",
            "attempt",
            "idempotency_key",
            "callback_url",
            "created_at",
            "started_at",
            "finished_at",
            "duration_seconds",
        ]
        read_only_fields = fields


class RunBatchResultSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    runs = RunSerializer(many=True)


class RunDetailSerializer(RunSerializer):
    node_runs = NodeRunSerializer(many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "node_runs"]
        read_only_fields = fields


class RerunSerializer(serializers.Serializer):
    from_node = serializers.CharField(max_length=64, required=False, allow_null=True, allow_blank=True)


class ResumeSerializer(serializers.Serializer):
    node = serializers.CharField(max_length=64)
    decision = serializers.ChoiceField(choices=["approve", "reject"])
    data = serializers.DictField(required=False, default=dict)


class RunEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunEvent
        fields = ["seq", "type", "data", "created_at"]
        read_only_fields = fields


class ArtifactSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Artifact
        fields = ["id", "run", "node_run", "name", "content_type", "size", "sha256", "download_url", "created_at"]
        read_only_fields = fields

    def get_download_url(self, artifact: Artifact) -> str:
        path = reverse("artifact-download", kwargs={"pk": artifact.pk})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path
