from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import AuditLog, Workspace


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=512, style={"input_type": "password"}, trim_whitespace=False)
    name = serializers.CharField(max_length=100, required=False, default="API")


class TokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Shown once; send it as `Authorization: Token <token>`.")
    name = serializers.CharField()
    prefix = serializers.CharField()
    created_at = serializers.DateTimeField()


class WorkspaceSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Workspace
        fields = ["id", "name", "slug", "is_personal", "role", "created_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_role(self, workspace: Workspace) -> str | None:
        roles = self.context.get("roles") or {}
        return roles.get(workspace.pk)


class AuditLogSerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = AuditLog
        fields = [
            "id",
            "workspace",
            "actor",
            "action",
            "target_type",
            "target_id",
            "target_repr",
            "data",
            "ip_address",
            "created_at",
        ]
        read_only_fields = fields
