"""Admin for users, their API tokens, workspaces with their members, and the (read-only) audit log.

Token hashes are never shown: a token is listed by its prefix, created through the service (the key
appears once, in the confirmation message) and revoked by an action.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from . import services
from .models import ApiToken, AuditLog, Membership, User, Workspace


class ApiTokenInline(admin.TabularInline):
    model = ApiToken
    fields = ["name", "key_prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MembershipInline(admin.TabularInline):
    model = Membership
    fields = ["workspace", "user", "role", "created_at"]
    readonly_fields = ["created_at"]
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(User)
class GraphwrightUserAdmin(UserAdmin):
    fieldsets = (*UserAdmin.fieldsets, ("Budgets", {"fields": ("monthly_token_budget",)}))
    inlines = [ApiTokenInline]
    list_display = ["username", "email", "is_staff", "is_active", "date_joined", "last_login"]

    def get_inlines(self, request: HttpRequest, obj: User | None = None) -> list[Any]:
        return self.inlines if obj is not None else []

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            services.personal_workspace(obj)


class ApiTokenAddForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "status"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "key_prefix", "user__username"]
    readonly_fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    fields = readonly_fields
    actions = ["revoke"]
    autocomplete_fields = ["user"]

    @admin.display(description="token")
    def prefix(self, obj: ApiToken) -> str:
        return f"{obj.key_prefix}…"

    @admin.display(description="status")
    def status(self, obj: ApiToken) -> str:
        return "active" if obj.is_active else "revoked"

    def get_form(self, request: HttpRequest, obj: ApiToken | None = None, **kwargs: Any):
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        return ["user", "name"] if obj is None else self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False  # view only; revoke is an action

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        try:
            token, key = services.api_token_create(user=obj.user, name=obj.name)
        except ValidationError as exc:  # the form already checked the name; kept for safety
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return
        obj.pk = token.pk
        obj.__dict__.update({k: v for k, v in token.__dict__.items() if not k.startswith("_")})
        self.message_user(
            request, f"Token for {obj.user}: {key} — copy it now, it will not be shown again.", messages.WARNING
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = 0
        for token in queryset.filter(revoked_at__isnull=True):
            services.api_token_revoke(token=token, user=request.user)
            count += 1
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "is_personal", "created_by", "created_at"]
    list_filter = ["is_personal"]
    search_fields = ["name", "slug", "memberships__user__username"]
    readonly_fields = ["created_by", "created_at"]
    inlines = [MembershipInline]

    def get_prepopulated_fields(self, request: HttpRequest, obj: Workspace | None = None) -> dict[str, Any]:
        return {"slug": ["name"]} if obj is None else {}


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "workspace", "role", "created_at"]
    list_filter = ["role", "workspace"]
    search_fields = ["user__username", "user__email", "workspace__name"]
    autocomplete_fields = ["user", "workspace"]


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    """Read only: the log is written by services, never edited."""

    list_display = ["created_at", "action", "actor", "workspace", "target_repr", "ip_address"]
    list_filter = ["action", "workspace"]
    search_fields = ["action", "target_repr", "actor__username"]
    date_hierarchy = "created_at"
    fields = ["created_at", "action", "actor", "workspace", "target_type", "target_id", "target_repr", "data",
              "ip_address"]  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditLog | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditLog | None = None) -> bool:
        return False
