from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Workspace
from workflows.choices import OnError, TriggerKind
from workflows.models import Edge, Node, Trigger, Workflow, WorkflowVersion


@extend_schema_field(OpenApiTypes.INT)
class _VisibleWorkspaceField(serializers.PrimaryKeyRelatedField):
    """A workspace id the requesting user can see (others read as unknown)."""

    def get_queryset(self):
        request = self.context.get("request")
        if request is None:
            return Workspace.objects.none()
        return Workspace.objects.for_user(request.user)


@extend_schema_field(OpenApiTypes.OBJECT)
class DefinitionField(serializers.JSONField):
    """A graphwright/v1 document."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("Expected a graphwright/v1 object.")
        return value


@extend_schema_field(OpenApiTypes.OBJECT)
class ObjectField(serializers.JSONField):
    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("Expected a JSON object.")
        return value


class WorkflowSerializer(serializers.ModelSerializer):
    workspace = _VisibleWorkspaceField(required=False)
    tags = serializers.ListField(child=serializers.CharField(max_length=64), required=False)
    inputs = ObjectField(required=False)
    variables = ObjectField(required=False)
    definition = DefinitionField(required=False, help_text="The draft as a graphwright/v1 document.")
    current_version = serializers.SerializerMethodField()

    class Meta:
        model = Workflow
        fields = [
            "id",
            "workspace",
            "name",
            "slug",
            "description",
            "tags",
            "is_active",
            "inputs",
            "variables",
            "max_concurrent_runs",
            "timeout",
            "definition",
            "current_version",
            "archived_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "slug", "current_version", "archived_at", "created_at", "updated_at"]
        extra_kwargs = {"name": {"required": False}}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is None and not attrs.get("name") and not (attrs.get("definition") or {}).get("name"):
            raise serializers.ValidationError({"name": ["This field is required."]})
        if self.instance is not None and "workspace" in attrs and attrs["workspace"].pk != self.instance.workspace_id:
            raise serializers.ValidationError({"workspace": ["A workflow cannot move to another workspace."]})
        return attrs

    def to_representation(self, instance: Workflow) -> dict[str, Any]:
        from workflows.services import workflow_definition

        data = super().to_representation(instance)
        data["definition"] = workflow_definition(workflow=instance)
        return data

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_current_version(self, workflow: Workflow) -> int | None:
        version = workflow.latest_version()
        return version.number if version else None


class WorkflowListSerializer(WorkflowSerializer):
    """The list leaves the definition out: fetch one workflow to read it."""

    class Meta(WorkflowSerializer.Meta):
        fields = [f for f in WorkflowSerializer.Meta.fields if f != "definition"]

    def to_representation(self, instance: Workflow) -> dict[str, Any]:
        return serializers.ModelSerializer.to_representation(self, instance)


class VersionSerializer(serializers.ModelSerializer):
    author = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = WorkflowVersion
        fields = ["id", "number", "note", "author", "created_at", "definition"]
        read_only_fields = fields


class PublishSerializer(serializers.Serializer):
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class ValidationResultSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    errors = serializers.ListField(child=serializers.DictField())


class ImportSerializer(serializers.Serializer):
    workspace = _VisibleWorkspaceField(required=False)
    document = DefinitionField(help_text="A graphwright/v1 document, as the export endpoint returns it.")


class NodeSerializer(serializers.ModelSerializer):
    id = serializers.SlugField(source="node_id", max_length=64, help_text="Stable id, unique in the workflow.")
    config = ObjectField(required=False)
    position = ObjectField(required=False)
    retry = ObjectField(required=False)

    class Meta:
        model = Node
        fields = ["id", "type", "name", "config", "position", "retry", "timeout", "on_error"]
        extra_kwargs = {"on_error": {"choices": OnError.choices}, "name": {"required": False}}


class NodeUpdateSerializer(NodeSerializer):
    id = serializers.SlugField(source="node_id", max_length=64, required=False, help_text="Renames the node.")


class EdgeSerializer(serializers.ModelSerializer):
    source = serializers.CharField(source="source.node_id", max_length=64)
    target = serializers.CharField(source="target.node_id", max_length=64)
    branch = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")

    class Meta:
        model = Edge
        fields = ["id", "source", "target", "branch"]
        read_only_fields = ["id"]


class TriggerSerializer(serializers.ModelSerializer):
    inputs = ObjectField(required=False)
    url = serializers.SerializerMethodField(help_text="Webhook triggers: the URL to POST to.")
    next_run_at = serializers.SerializerMethodField()

    class Meta:
        model = Trigger
        fields = [
            "id",
            "workflow",
            "kind",
            "cron",
            "inputs",
            "respond_with_result",
            "is_active",
            "url",
            "next_run_at",
            "last_fired_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "workflow", "url", "next_run_at", "last_fired_at", "created_at", "updated_at"]
        extra_kwargs = {"kind": {"choices": TriggerKind.choices}}

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_url(self, trigger: Trigger) -> str | None:
        if trigger.kind != TriggerKind.WEBHOOK:
            return None
        path = reverse("hook", kwargs={"token": trigger.token})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else settings.SITE_URL + path

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_run_at(self, trigger: Trigger) -> Any:
        schedule = trigger.schedule if trigger.schedule_id else None
        return schedule.next_run if schedule is not None else None


class TriggerUpdateSerializer(TriggerSerializer):
    class Meta(TriggerSerializer.Meta):
        read_only_fields = [*TriggerSerializer.Meta.read_only_fields, "kind"]
