"""The workflow admin: staff edit drafts with node/edge inlines, validate, publish, export and import.

Every write goes through :mod:`workflows.services`; the inline rows are turned into one
graphwright/v1 definition and saved with ``workflow_update`` (so the admin cannot save what the
API would refuse).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from . import services
from .admin_forms import EdgeAdminForm, EdgeFormSet, ImportForm, NodeAdminForm, NodeFormSet
from .graph import validate_definition
from .models import Edge, Node, Trigger, Workflow, WorkflowVersion


def _error_text(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in error.message_dict.items())
    return " ".join(error.messages)


class NodeInline(admin.StackedInline):
    model = Node
    form = NodeAdminForm
    formset = NodeFormSet
    extra = 0
    fields = [("node_id", "type", "name"), "config", ("retry", "timeout", "on_error"), "position"]


class EdgeInline(admin.TabularInline):
    model = Edge
    form = EdgeAdminForm
    formset = EdgeFormSet
    fk_name = "workflow"
    extra = 0
    fields = ["source", "target", "branch"]


class ArchivedFilter(admin.SimpleListFilter):
    title = "archived"
    parameter_name = "archived"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "Not archived"), ("yes", "Archived")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.archived()
        if self.value() == "no":
            return queryset.active()
        return queryset


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        tags = sorted({tag for tags in Workflow.objects.values_list("tags", flat=True) for tag in tags or []})
        return [(tag, tag) for tag in tags]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        # JSON containment is not on SQLite; the tag list is short, so filter ids in Python.
        ids = [pk for pk, tags in queryset.values_list("pk", "tags") if self.value() in (tags or [])]
        return queryset.filter(pk__in=ids)


class ServiceErrorsMixin:
    """Saves go through services: a ValidationError or PermissionDenied they raise rolls the whole
    change form back and comes back as a message instead of a server error."""

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context=None
    ):
        try:
            with transaction.atomic():
                return super().changeform_view(request, object_id, form_url, extra_context)
        except (ValidationError, PermissionDenied) as exc:
            text = _error_text(exc) if isinstance(exc, ValidationError) else str(exc)
            self.message_user(request, f"Not saved: {text}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


@admin.register(Workflow)
class WorkflowAdmin(ServiceErrorsMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "workspace",
        "tag_list",
        "is_active",
        "archived",
        "node_count",
        "version_count",
        "updated_at",
    ]
    list_filter = ["workspace", TagFilter, "is_active", ArchivedFilter]
    search_fields = ["name", "slug", "description", "nodes__node_id", "nodes__type"]
    readonly_fields = ["created_by", "created_at", "updated_at", "archived_at", "latest_version_link"]
    fieldsets = [
        (None, {"fields": ["workspace", "name", "slug", "description", "tags", "is_active"]}),
        ("Inputs and settings", {"fields": ["inputs", "variables", "timeout", "max_concurrent_runs"]}),
        ("History", {"fields": ["latest_version_link", "created_by", "created_at", "updated_at", "archived_at"]}),
    ]
    inlines = [NodeInline, EdgeInline]
    actions = ["validate_workflows", "publish_workflows", "export_workflows", "archive_workflows", "restore_workflows"]
    change_list_template = "admin/workflows/workflow/change_list.html"
    change_form_template = "admin/workflows/workflow/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .select_related("workspace")
            .annotate(_nodes=Count("nodes", distinct=True), _versions=Count("versions", distinct=True))
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Workflow | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "workspace"] if obj is not None else fields

    def get_prepopulated_fields(self, request: HttpRequest, obj: Workflow | None = None) -> dict[str, Any]:
        return {"slug": ["name"]} if obj is None else {}

    @admin.display(description="tags")
    def tag_list(self, obj: Workflow) -> str:
        return ", ".join(obj.tags or [])

    @admin.display(boolean=True, description="archived")
    def archived(self, obj: Workflow) -> bool:
        return obj.is_archived

    @admin.display(description="nodes", ordering="_nodes")
    def node_count(self, obj: Workflow) -> int:
        return obj._nodes

    @admin.display(description="versions", ordering="_versions")
    def version_count(self, obj: Workflow) -> int:
        return obj._versions

    @admin.display(description="latest version")
    def latest_version_link(self, obj: Workflow) -> str:
        version = obj.latest_version() if obj.pk else None
        if version is None:
            return "not published yet"
        url = reverse("admin:workflows_workflowversion_change", args=[version.pk])
        dirty = " (the draft has changed since)" if services.workflow_is_dirty(workflow=obj) else ""
        return format_html('<a href="{}">v{}</a>{}', url, version.number, dirty)

    # -- saving through the services -------------------------------------------------------------
    _MODEL_FIELDS = ["name", "slug", "description", "tags", "is_active", "inputs", "variables", "timeout",
                     "max_concurrent_runs"]  # fmt: skip

    def save_model(self, request: HttpRequest, obj: Workflow, form: Any, change: bool) -> None:
        fields = {name: form.cleaned_data.get(name) for name in self._MODEL_FIELDS if name in form.cleaned_data}
        fields["tags"] = fields.get("tags") or []
        fields["inputs"] = fields.get("inputs") or {}
        fields["variables"] = fields.get("variables") or {}
        if change:
            saved = services.workflow_update(workflow=obj, user=request.user, **fields)
        else:
            name = fields.pop("name")
            saved = services.workflow_create(workspace=obj.workspace, user=request.user, name=name, **fields)
        obj.pk = saved.pk
        obj.__dict__.update({k: v for k, v in saved.__dict__.items() if not k.startswith("_")})

    def save_related(self, request: HttpRequest, form: Any, formsets: list[Any], change: bool) -> None:
        form.save_m2m()
        node_formset = next(fs for fs in formsets if fs.model is Node)
        edge_formset = next(fs for fs in formsets if fs.model is Edge)
        nodes, new_id_of = [], {}
        for node_form in node_formset.forms:
            data = getattr(node_form, "cleaned_data", None)
            if not data or node_formset._should_delete_form(node_form):
                continue
            nodes.append(
                {
                    "id": data["node_id"],
                    "type": data["type"],
                    "name": data.get("name") or "",
                    "config": {} if data.get("config") is None else data["config"],
                    "position": data.get("position") or {},
                    "retry": data.get("retry") or {},
                    "timeout": data.get("timeout"),
                    "on_error": data.get("on_error") or "fail",
                }
            )
            if node_form.instance.pk:
                new_id_of[node_form.instance.pk] = data["node_id"]
        edges = []
        for edge_form in edge_formset.forms:
            data = getattr(edge_form, "cleaned_data", None)
            if not data or edge_formset._should_delete_form(edge_form):
                continue
            source, target = new_id_of.get(data["source"].pk), new_id_of.get(data["target"].pk)
            if source and target:  # an edge of a deleted node goes with it
                edges.append({"source": source, "target": target, "branch": data.get("branch") or None})
        wanted = services.normalize_definition({"nodes": nodes, "edges": edges})
        workflow = Workflow.objects.get(pk=form.instance.pk)
        current = services.workflow_definition(workflow=workflow)
        if (current["nodes"], current["edges"]) != (wanted["nodes"], wanted["edges"]):
            services.workflow_update(workflow=workflow, user=request.user, definition={"nodes": nodes, "edges": edges})
        for formset in formsets:  # the change message reads these; the service saved the rows
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def delete_model(self, request: HttpRequest, obj: Workflow) -> None:
        services.workflow_archive(workflow=obj, user=request.user)  # deleting archives: run history stays

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for workflow in queryset:
            services.workflow_archive(workflow=workflow, user=request.user)

    # -- actions ------------------------------------------------------------------------------------
    def _each(self, request: HttpRequest, queryset: QuerySet, verb: str, call) -> None:
        done = 0
        for workflow in queryset:
            try:
                call(workflow)
                done += 1
            except ValidationError as exc:
                self.message_user(request, f"{workflow}: {_error_text(exc)}", messages.ERROR)
            except PermissionDenied as exc:
                self.message_user(request, f"{workflow}: {exc}", messages.ERROR)
        if done:
            self.message_user(request, f"{verb} {done} workflow{'s' if done != 1 else ''}.", messages.SUCCESS)

    @admin.action(description="Validate")
    def validate_workflows(self, request: HttpRequest, queryset: QuerySet) -> None:
        for workflow in queryset:
            errors = validate_definition(services.workflow_definition(workflow=workflow))
            if errors:
                listed = "; ".join(error.message for error in errors[:10])
                more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
                self.message_user(request, f"{workflow}: {len(errors)} problem(s): {listed}{more}", messages.ERROR)
            else:
                self.message_user(request, f"{workflow}: valid.", messages.SUCCESS)

    @admin.action(description="Publish new version")
    def publish_workflows(self, request: HttpRequest, queryset: QuerySet) -> None:
        for workflow in queryset:
            try:
                version = services.workflow_publish(
                    workflow=workflow, user=request.user, note="Published from the admin"
                )
            except (ValidationError, PermissionDenied) as exc:
                text = _error_text(exc) if isinstance(exc, ValidationError) else str(exc)
                self.message_user(request, f"{workflow}: not published: {text}", messages.ERROR)
            else:
                self.message_user(request, f"{workflow}: version {version.number} is current.", messages.SUCCESS)

    @admin.action(description="Export JSON")
    def export_workflows(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        workflows = list(queryset)
        if len(workflows) == 1:
            return _json_download(workflows[0])
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for workflow in workflows:
                document = services.workflow_export(workflow=workflow)
                archive.writestr(f"{workflow.workspace.slug}/{workflow.slug}.json", json.dumps(document, indent=2))
        response = HttpResponse(buffer.getvalue(), content_type="application/zip")
        response["Content-Disposition"] = 'attachment; filename="workflows.zip"'
        return response

    @admin.action(description="Archive")
    def archive_workflows(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, "Archived", lambda w: services.workflow_archive(workflow=w, user=request.user))

    @admin.action(description="Restore")
    def restore_workflows(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, "Restored", lambda w: services.workflow_restore(workflow=w, user=request.user))

    # -- extra pages ---------------------------------------------------------------------------------
    def get_urls(self):
        extra = [
            path("import/", self.admin_site.admin_view(self.import_view), name="workflows_workflow_import"),
            path("<int:pk>/export/", self.admin_site.admin_view(self.export_view), name="workflows_workflow_export"),
        ]
        return extra + super().get_urls()

    def export_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return _json_download(get_object_or_404(Workflow, pk=pk))

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ImportForm(request.POST or None, request.FILES or None)
        problems: list[str] = []
        if request.method == "POST" and form.is_valid():
            try:
                workflow = services.workflow_import(
                    workspace=form.cleaned_data["workspace"],
                    user=request.user,
                    document=form.cleaned_data["document"],
                    name=form.cleaned_data.get("name") or None,
                    publish=form.cleaned_data.get("publish", False),
                )
            except ValidationError as exc:
                if hasattr(exc, "error_dict"):
                    problems = [f"{field}: {message}" for field, msgs in exc.message_dict.items() for message in msgs]
                else:
                    problems = exc.messages
            except PermissionDenied as exc:
                problems = [str(exc)]
            else:
                self.message_user(request, f"Imported “{workflow}”.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import a workflow",
            "form": form,
            "problems": problems,
            "opts": self.model._meta,
        }
        return TemplateResponse(
            request, "admin/workflows/workflow/import.html", context, status=400 if problems else 200
        )


def _json_download(workflow: Workflow) -> HttpResponse:
    document = services.workflow_export(workflow=workflow)
    response = HttpResponse(json.dumps(document, indent=2, ensure_ascii=False), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{workflow.slug}.json"'
    return response


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(admin.ModelAdmin):
    """Versions are immutable: view only."""

    list_display = ["workflow", "number", "author", "note", "created_at"]
    list_filter = ["workflow__workspace"]
    search_fields = ["workflow__name", "note"]
    fields = ["workflow", "number", "author", "note", "created_at", "pretty_definition"]
    readonly_fields = fields

    @admin.display(description="definition")
    def pretty_definition(self, obj: WorkflowVersion) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.definition, indent=2, ensure_ascii=False))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WorkflowVersion | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: WorkflowVersion | None = None) -> bool:
        return False


@admin.register(Trigger)
class TriggerAdmin(ServiceErrorsMixin, admin.ModelAdmin):
    """Webhook and schedule triggers, written through ``workflows.triggers`` (which keeps the schedule in step)."""

    list_display = ["workflow", "kind", "cron", "is_active", "respond_with_result", "last_fired_at", "created_at"]
    list_filter = ["kind", "is_active", "workflow__workspace"]
    search_fields = ["workflow__name", "cron"]
    readonly_fields = ["token_prefix", "created_by", "last_fired_at", "created_at", "updated_at"]
    actions = ["activate", "deactivate"]

    def get_fields(self, request: HttpRequest, obj: Trigger | None = None) -> list[str]:
        editable = ["cron", "inputs", "respond_with_result", "is_active"]
        return ["workflow", "kind", *editable] + (self.readonly_fields if obj is not None else [])

    def get_readonly_fields(self, request: HttpRequest, obj: Trigger | None = None) -> list[str]:
        return ["workflow", "kind", *self.readonly_fields] if obj is not None else []

    @admin.display(description="webhook token")
    def token_prefix(self, obj: Trigger) -> str:
        return f"{obj.token[:6]}…" if obj.token else ""

    def save_model(self, request: HttpRequest, obj: Trigger, form: Any, change: bool) -> None:
        from .triggers import trigger_create, trigger_update

        data = form.cleaned_data
        fields = {
            "cron": data.get("cron") or "",
            "inputs": data.get("inputs") or {},
            "respond_with_result": data.get("respond_with_result", False),
            "is_active": data.get("is_active", True),
        }
        if change:
            saved = trigger_update(trigger=obj, user=request.user, **fields)
        else:
            saved = trigger_create(workflow=data["workflow"], user=request.user, kind=data["kind"], **fields)
        obj.pk = saved.pk
        obj.__dict__.update({k: v for k, v in saved.__dict__.items() if not k.startswith("_")})

    def delete_model(self, request: HttpRequest, obj: Trigger) -> None:
        from .triggers import trigger_delete

        trigger_delete(trigger=obj, user=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for trigger in queryset:
            self.delete_model(request, trigger)

    def _switch(self, request: HttpRequest, queryset: QuerySet, active: bool) -> None:
        from .triggers import trigger_update

        count = 0
        for trigger in queryset.select_related("workflow"):
            try:
                trigger_update(trigger=trigger, user=request.user, is_active=active)
                count += 1
            except (ValidationError, PermissionDenied) as exc:
                text = _error_text(exc) if isinstance(exc, ValidationError) else str(exc)
                self.message_user(request, f"{trigger}: {text}", messages.ERROR)
        self.message_user(request, f"Switched {'on' if active else 'off'} {count} trigger(s).", messages.SUCCESS)

    @admin.action(description="Switch on")
    def activate(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._switch(request, queryset, True)

    @admin.action(description="Switch off")
    def deactivate(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._switch(request, queryset, False)
