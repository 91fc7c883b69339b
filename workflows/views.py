"""Pages for workflows: the dashboard, the library, the gallery, the editor, versions and runs.

Every object is looked up through ``for_user`` (another user's object is a 404) and every write
is checked with ``accounts.permissions.require`` and goes through ``workflows.services`` or
``runs.services`` — the same functions the API calls.
"""

from __future__ import annotations

import datetime
import difflib
import json
from pathlib import Path
from typing import Any

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.generic import ListView, TemplateView

from accounts.choices import Action
from accounts.permissions import can, require
from runs import services as run_services
from runs.choices import RunStatus
from runs.models import Run

from . import diagram, graph, services
from .forms import BatchRunForm, EdgeForm, ImportForm, NodeAddForm, NodeForm, PublishForm, RunForm, WorkflowForm
from .models import Workflow, WorkflowVersion
from .nodes import all_node_types, get_node_type

DEMO_DIR = Path(__file__).resolve().parent / "demo"
CHART_STATUSES = [
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
    RunStatus.RUNNING,
    RunStatus.WAITING,
    RunStatus.QUEUED,
]


def error_text(exc: ValidationError) -> str:
    """One readable line from a ValidationError (field messages prefixed with their field)."""
    if hasattr(exc, "error_dict"):
        return "; ".join(
            f"{field}: {' '.join(msgs)}" if field != "__all__" else " ".join(msgs)
            for field, msgs in exc.message_dict.items()
        )
    return " ".join(exc.messages)


class WorkflowMixin(LoginRequiredMixin):
    """Loads ``self.workflow`` from the URL, scoped to the user; archived workflows are gone (404)."""

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.workflow = get_object_or_404(Workflow.objects.for_user(request.user).active(), pk=kwargs["pk"])
        return super().dispatch(request, *args, **kwargs)

    def require(self, action: str) -> None:
        require(self.request.user, self.workflow.workspace_id, action)

    def detail_url(self, anchor: str = "") -> str:
        return reverse("workflow_detail", args=[self.workflow.pk]) + (f"#{anchor}" if anchor else "")

    def definition(self) -> dict[str, Any]:
        return services.workflow_definition(workflow=self.workflow)


# --- dashboard --------------------------------------------------------------------------------------
def runs_chart(runs_qs, days: int = 7) -> dict[str, Any]:
    """Stacked bars of runs per day and status over the last ``days`` days, laid out for inline SVG."""
    today = timezone.localdate()
    start = today - datetime.timedelta(days=days - 1)
    since = timezone.make_aware(datetime.datetime.combine(start, datetime.time.min))
    rows = (
        runs_qs.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day", "status")
        .annotate(n=Count("id"))
    )
    counts: dict[tuple[datetime.date, str], int] = {}
    for row in rows:
        counts[(row["day"], row["status"])] = counts.get((row["day"], row["status"]), 0) + row["n"]
    day_list = [start + datetime.timedelta(days=i) for i in range(days)]
    totals = {d: sum(counts.get((d, s), 0) for s in RunStatus.values) for d in day_list}
    peak = max(totals.values(), default=0) or 1
    bar_w, gap, plot_h = 30, 12, 100
    bars = []
    for i, day in enumerate(day_list):
        x, y = 24 + i * (bar_w + gap), plot_h + 10
        segments = []
        for status in CHART_STATUSES:
            n = counts.get((day, status), 0)
            if n:
                h = n / peak * plot_h
                y -= h
                segments.append({"status": status, "n": n, "y": round(y, 1), "h": round(h, 1)})
        bars.append({"x": x, "day": day, "label": day.strftime("%a"), "total": totals[day], "segments": segments})
    by_status = {s: sum(counts.get((d, s), 0) for d in day_list) for s in CHART_STATUSES}
    return {
        "bars": bars,
        "width": 24 + days * (bar_w + gap),
        "bar_width": bar_w,
        "peak": peak,
        "total": sum(totals.values()),
        "by_status": [(s, RunStatus(s).label, n) for s, n in by_status.items()],
    }


class DashboardView(LoginRequiredMixin, TemplateView):
    template_name = "dashboard.html"

    def get_context_data(self, **kwargs):
        ctx = super().get_context_data(**kwargs)
        user = self.request.user
        runs = Run.objects.for_user(user)
        workflows = Workflow.objects.for_user(user).active()
        ctx.update(
            recent_runs=runs.select_related("workflow")[:8],
            active_runs=runs.active().count(),
            workflows=(recent := list(workflows.filter(is_active=True).order_by("-updated_at")[:8])),
            # The first run to suggest: the RAG demo works offline on the local models.
            suggested_workflow=next((w for w in recent if "rag" in (w.tags or [])), recent[0] if recent else None),
            workflow_count=workflows.count(),
            chart=runs_chart(runs),
        )
        return ctx


# --- library ----------------------------------------------------------------------------------
class WorkflowListView(LoginRequiredMixin, ListView):
    template_name = "workflows/list.html"
    context_object_name = "workflows"
    paginate_by = 12

    def get_queryset(self):
        qs = Workflow.objects.for_user(self.request.user).active().select_related("workspace")
        params = self.request.GET
        if q := params.get("q", "").strip():
            qs = qs.filter(Q(name__icontains=q) | Q(description__icontains=q))
        if params.get("active") in {"1", "0"}:
            qs = qs.filter(is_active=params["active"] == "1")
        if tag := params.get("tag", "").strip():
            # Tags are a JSON list; matching in Python works the same on SQLite and PostgreSQL.
            qs = qs.filter(pk__in=[pk for pk, tags in qs.values_list("pk", "tags") if tag in (tags or [])])
        return qs.annotate(run_count=Count("runs")).order_by("name", "id")

    def get_context_data(self, **kwargs):
        ctx = super().get_context_data(**kwargs)
        all_tags = set()
        for tags in Workflow.objects.for_user(self.request.user).active().values_list("tags", flat=True):
            all_tags.update(t for t in tags or [] if isinstance(t, str))
        query = self.request.GET.copy()
        query.pop("page", None)
        ctx.update(
            all_tags=sorted(all_tags),
            q=self.request.GET.get("q", ""),
            tag=self.request.GET.get("tag", ""),
            active=self.request.GET.get("active", ""),
            querystring=query.urlencode(),
            create_form=WorkflowForm(),
            import_form=ImportForm(),
            can_edit=can(self.request.user, self.request.workspace, Action.EDIT),
        )
        return ctx


class WorkflowCreateView(LoginRequiredMixin, View):
    def get(self, request):
        return render(request, "workflows/create.html", {"form": WorkflowForm(), "import_form": ImportForm()})

    def post(self, request):
        require(request.user, request.workspace, Action.EDIT)
        form = WorkflowForm(request.POST)
        if form.is_valid():
            try:
                workflow = services.workflow_create(
                    workspace=request.workspace,
                    user=request.user,
                    name=form.cleaned_data["name"],
                    description=form.cleaned_data["description"],
                    tags=form.cleaned_data["tags"],
                )
            except ValidationError as exc:
                form.add_error(None, error_text(exc))
            else:
                messages.success(request, f"Created “{workflow.name}”. Add its first node.")
                return redirect("workflow_detail", pk=workflow.pk)
        return render(request, "workflows/create.html", {"form": form, "import_form": ImportForm()}, status=400)


class WorkflowImportView(LoginRequiredMixin, View):
    def get(self, request):
        return render(request, "workflows/create.html", {"form": WorkflowForm(), "import_form": ImportForm()})

    def post(self, request):
        require(request.user, request.workspace, Action.EDIT)
        form = ImportForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                workflow = services.workflow_import(
                    workspace=request.workspace, user=request.user, document=form.cleaned_data["file"]
                )
            except ValidationError as exc:
                form.add_error("file", error_text(exc))
            else:
                messages.success(request, f"Imported “{workflow.name}”.")
                return redirect("workflow_detail", pk=workflow.pk)
        return render(request, "workflows/create.html", {"form": WorkflowForm(), "import_form": form}, status=400)


def gallery_templates() -> list[dict[str, Any]]:
    """The starter workflows shipped in ``workflows/demo/*.json``."""
    items = []
    for path in sorted(DEMO_DIR.glob("*.json")):
        try:
            document = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(document, dict):
            continue
        types = [get_node_type(str(n.get("type"))) for n in document.get("nodes", [])]
        items.append(
            {
                "slug": path.stem,
                "name": document.get("name", path.stem),
                "description": document.get("description", ""),
                "tags": document.get("tags", []),
                "node_count": len(document.get("nodes", [])),
                "icons": " ".join(dict.fromkeys(t.icon for t in types if t)),
                "document": document,
            }
        )
    return items


class GalleryView(LoginRequiredMixin, View):
    def get(self, request):
        return render(request, "workflows/gallery.html", {"templates": gallery_templates()})


class GalleryUseView(LoginRequiredMixin, View):
    def post(self, request, slug: str):
        require(request.user, request.workspace, Action.EDIT)
        template = next((t for t in gallery_templates() if t["slug"] == slug), None)
        if template is None:
            raise Http404("No such template")
        try:
            workflow = services.workflow_import(
                workspace=request.workspace, user=request.user, document=template["document"]
            )
        except ValidationError as exc:
            messages.error(request, f"Could not use this template: {error_text(exc)}")
            return redirect("workflow_gallery")
        messages.success(request, f"Created “{workflow.name}” from the template.")
        return redirect("workflow_detail", pk=workflow.pk)


# --- one workflow -------------------------------------------------------------------------------
class WorkflowDetailView(WorkflowMixin, View):
    """The workflow page: diagram, editor, validation, publish, versions and the run form."""

    def get(self, request, pk: int):
        return render(request, "workflows/detail.html", self.context())

    def context(self, **extra) -> dict[str, Any]:
        definition = self.definition()
        errors = graph.validate_definition(definition)
        node_ids = [str(n.get("id")) for n in definition.get("nodes", [])]
        node_errors: dict[str, list[str]] = {}
        general_errors = []
        for error in errors:
            if error.node and error.node in node_ids:
                node_errors.setdefault(error.node, []).append(error.message)
            else:
                general_errors.append(error.message)
        types = all_node_types()
        nodes = []
        for spec in definition.get("nodes", []):
            node_type = types.get(str(spec.get("type")))
            nodes.append(
                {
                    "id": spec.get("id"),
                    "name": spec.get("name") or "",
                    "type": spec.get("type"),
                    "label": node_type.label if node_type else f"Unknown type {spec.get('type')}",
                    "icon": node_type.icon if node_type else "?",
                    "category": node_type.category if node_type else "unknown",
                    "errors": node_errors.get(str(spec.get("id")), []),
                }
            )
        user = self.request.user
        ctx = {
            "workflow": self.workflow,
            "definition": definition,
            "diagram": diagram.build(definition, errors=errors),
            "errors": errors,
            "general_errors": general_errors,
            "nodes": nodes,
            "edges": definition.get("edges", []),
            "node_types": types.values(),
            "node_add_form": NodeAddForm(existing_ids=set(node_ids), auto_id="add_%s"),
            "edge_form": EdgeForm(node_ids=node_ids, auto_id="edge_%s"),
            "publish_form": PublishForm(auto_id="publish_%s"),
            "run_form": RunForm(declarations=self.workflow.inputs, auto_id="run_%s"),
            "versions": self.workflow.versions.select_related("author")[:10],
            "runs": self.workflow.runs.all()[:5],
            "can_edit": can(user, self.workflow.workspace_id, Action.EDIT),
            "can_run": can(user, self.workflow.workspace_id, Action.RUN),
            "validated": self.request.GET.get("validate") == "1",
        }
        ctx.update(extra)
        return ctx


class WorkflowSettingsView(WorkflowMixin, View):
    """Name, description, tags and the declared inputs."""

    def form(self, data=None) -> WorkflowForm:
        form = WorkflowForm(
            data,
            initial={
                "name": self.workflow.name,
                "description": self.workflow.description,
                "tags": ", ".join(self.workflow.tags or []),
            },
        )
        from django import forms

        form.fields["inputs"] = forms.CharField(
            label="Inputs (JSON)",
            required=False,
            widget=forms.Textarea(attrs={"rows": 5, "class": "mono"}),
            help_text='e.g. {"topic": {"type": "string", "required": true}}',
            initial=json.dumps(self.workflow.inputs or {}, indent=2),
        )
        return form

    def get(self, request, pk: int):
        return render(request, "workflows/settings.html", {"workflow": self.workflow, "form": self.form()})

    def post(self, request, pk: int):
        self.require(Action.EDIT)
        form = self.form(request.POST)
        if form.is_valid():
            try:
                inputs = json.loads(form.cleaned_data["inputs"] or "{}")
                if not isinstance(inputs, dict):
                    raise ValueError("inputs must be a JSON object")
            except ValueError as exc:
                form.add_error("inputs", f"Not valid: {exc}")
            else:
                try:
                    services.workflow_update(
                        workflow=self.workflow,
                        user=request.user,
                        name=form.cleaned_data["name"],
                        description=form.cleaned_data["description"],
                        tags=form.cleaned_data["tags"],
                        inputs=inputs,
                    )
                except ValidationError as exc:
                    form.add_error(None, error_text(exc))
                else:
                    messages.success(request, "Saved.")
                    return redirect(self.detail_url())
        return render(request, "workflows/settings.html", {"workflow": self.workflow, "form": form}, status=400)


class NodeEditView(WorkflowMixin, View):
    """Add (``node_id`` not in the draft yet, ``?type=`` given) or edit one node."""

    def resolve(self, node_id: str):
        definition = self.definition()
        node = next((n for n in definition.get("nodes", []) if n.get("id") == node_id), None)
        type_name = node["type"] if node else self.request.GET.get("type") or self.request.POST.get("type", "")
        node_type = get_node_type(type_name)
        if node_type is None:
            raise Http404("Unknown node type")
        return definition, node, node_type

    def render_form(self, node_id, node, node_type, form, status=200):
        ctx = {
            "workflow": self.workflow,
            "node_id": node_id,
            "node": node,
            "node_type": node_type,
            "form": form,
            "is_new": node is None,
        }
        return render(self.request, "workflows/node_form.html", ctx, status=status)

    def get(self, request, pk: int, node_id: str):
        _definition, node, node_type = self.resolve(node_id)
        return self.render_form(node_id, node, node_type, NodeForm(node_type=node_type, node=node))

    def post(self, request, pk: int, node_id: str):
        self.require(Action.EDIT)
        _definition, node, node_type = self.resolve(node_id)
        form = NodeForm(request.POST, node_type=node_type, node=node)
        if not form.is_valid():
            return self.render_form(node_id, node, node_type, form, status=400)
        updated = form.node_document(node or {"id": node_id, "type": node_type.name})
        try:
            if node is None:
                services.workflow_node_add(workflow=self.workflow, user=request.user, node=updated)
            else:
                changes = {k: v for k, v in updated.items() if k not in {"id", "type"}}
                services.workflow_node_update(workflow=self.workflow, user=request.user, node_id=node_id, **changes)
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                form.add_service_errors(exc.message_dict)
            else:
                form.add_error(None, exc.messages)
            return self.render_form(node_id, node, node_type, form, status=400)
        messages.success(request, f"Node “{node_id}” saved.")
        return redirect(self.detail_url("diagram"))


class NodeAddView(WorkflowMixin, View):
    """Picks a type and an id, then opens the node form (the node is saved from there)."""

    def post(self, request, pk: int):
        self.require(Action.EDIT)
        definition = self.definition()
        existing = {str(n.get("id")) for n in definition.get("nodes", [])}
        form = NodeAddForm(request.POST, existing_ids=existing)
        if not form.is_valid():
            for field, errs in form.errors.items():
                messages.error(request, f"{field}: {' '.join(errs)}" if field != "__all__" else " ".join(errs))
            return redirect(self.detail_url("add-node"))
        url = reverse("workflow_node", args=[self.workflow.pk, form.cleaned_data["node_id"]])
        return HttpResponseRedirect(f"{url}?type={form.cleaned_data['type']}")


class NodeDeleteView(WorkflowMixin, View):
    def post(self, request, pk: int, node_id: str):
        self.require(Action.EDIT)
        try:
            services.workflow_node_remove(workflow=self.workflow, user=request.user, node_id=node_id)
        except ValidationError as exc:
            raise Http404(error_text(exc)) from exc
        messages.success(request, f"Node “{node_id}” and its connections removed.")
        return redirect(self.detail_url("diagram"))


class EdgeAddView(WorkflowMixin, View):
    def post(self, request, pk: int):
        self.require(Action.EDIT)
        definition = self.definition()
        form = EdgeForm(request.POST, node_ids=[str(n.get("id")) for n in definition.get("nodes", [])])
        if not form.is_valid():
            messages.error(request, "Not connected: " + " ".join(e for errs in form.errors.values() for e in errs))
            return redirect(self.detail_url("connect"))
        source, target, branch = (form.cleaned_data[k] for k in ("source", "target", "branch"))
        key = (source, target, branch or "")
        if any((e.get("source"), e.get("target"), e.get("branch") or "") == key for e in definition.get("edges", [])):
            messages.info(request, "Those nodes are already connected.")
            return redirect(self.detail_url("diagram"))
        try:
            services.workflow_edge_add(
                workflow=self.workflow, user=request.user, source=source, target=target, branch=branch or None
            )
        except ValidationError as exc:
            messages.error(request, f"Not connected: {error_text(exc)}")
        else:
            messages.success(request, f"Connected {source} → {target}" + (f" [{branch}]." if branch else "."))
        return redirect(self.detail_url("diagram"))


class EdgeDeleteView(WorkflowMixin, View):
    def post(self, request, pk: int):
        self.require(Action.EDIT)
        source, target = request.POST.get("source", ""), request.POST.get("target", "")
        branch = request.POST.get("branch") or None
        try:
            services.workflow_edge_remove(
                workflow=self.workflow, user=request.user, source=source, target=target, branch=branch
            )
        except ValidationError as exc:
            raise Http404(error_text(exc)) from exc
        messages.success(request, f"Removed {source} → {target}.")
        return redirect(self.detail_url("diagram"))


class WorkflowValidateView(WorkflowMixin, View):
    def post(self, request, pk: int):
        errors = graph.validate_definition(self.definition())
        if errors:
            messages.error(
                request, f"{len(errors)} problem{'s' if len(errors) != 1 else ''} found — see the marked nodes."
            )
        else:
            messages.success(request, "The workflow is valid.")
        return redirect(reverse("workflow_detail", args=[pk]) + "?validate=1#diagram")


class WorkflowPublishView(WorkflowMixin, View):
    def post(self, request, pk: int):
        self.require(Action.EDIT)
        form = PublishForm(request.POST)
        form.is_valid()
        try:
            version = services.workflow_publish(
                workflow=self.workflow, user=request.user, note=form.cleaned_data.get("note", "")
            )
        except ValidationError as exc:
            messages.error(request, f"Not published: {error_text(exc)}")
            return redirect(reverse("workflow_detail", args=[pk]) + "?validate=1#diagram")
        messages.success(request, f"Published version {version.number}.")
        return redirect(self.detail_url("versions"))


class WorkflowToggleActiveView(WorkflowMixin, View):
    def post(self, request, pk: int):
        self.require(Action.EDIT)
        workflow = services.workflow_update(
            workflow=self.workflow, user=request.user, is_active=not self.workflow.is_active
        )
        messages.success(request, f"“{workflow.name}” is now {'active' if workflow.is_active else 'inactive'}.")
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
            target = self.detail_url()
        return redirect(target)


class WorkflowDuplicateView(WorkflowMixin, View):
    def post(self, request, pk: int):
        require(request.user, self.workflow.workspace_id, Action.EDIT)
        document = services.workflow_export(workflow=self.workflow)
        document["name"] = f"Copy of {self.workflow.name}"[:200]
        try:
            copy = services.workflow_import(workspace=self.workflow.workspace, user=request.user, document=document)
        except ValidationError as exc:
            messages.error(request, f"Could not duplicate: {error_text(exc)}")
            return redirect(self.detail_url())
        messages.success(request, f"Created “{copy.name}”.")
        return redirect("workflow_detail", pk=copy.pk)


class WorkflowExportView(WorkflowMixin, View):
    def get(self, request, pk: int):
        document = services.workflow_export(workflow=self.workflow)
        response = HttpResponse(json.dumps(document, indent=2), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{self.workflow.slug or "workflow"}.json"'
        return response


class WorkflowDeleteView(WorkflowMixin, View):
    """Asks first; deleting archives, so the run history stays."""

    def get(self, request, pk: int):
        return render(request, "workflows/confirm_delete.html", {"workflow": self.workflow})

    def post(self, request, pk: int):
        self.require(Action.EDIT)
        services.workflow_archive(workflow=self.workflow, user=request.user)
        messages.success(request, f"“{self.workflow.name}” was deleted. Its runs are kept.")
        return redirect("workflow_list")


class VersionListView(WorkflowMixin, View):
    def get(self, request, pk: int):
        versions = list(self.workflow.versions.select_related("author").order_by("-number"))
        a, b = request.GET.get("a"), request.GET.get("b")
        ctx: dict[str, Any] = {"workflow": self.workflow, "versions": versions}
        if a and b:
            by_number = {str(v.number): v for v in versions}
            if a not in by_number or b not in by_number:
                raise Http404("No such version")
            ctx.update(version_diff(by_number[a], by_number[b]))
        elif len(versions) >= 2:
            ctx.update(a_default=versions[1].number, b_default=versions[0].number)
        return render(request, "workflows/versions.html", ctx)


def version_diff(old: WorkflowVersion, new: WorkflowVersion) -> dict[str, Any]:
    """A summary (nodes added/removed/changed, edges added/removed) and a line diff of the JSON."""
    old_nodes = {n.get("id"): n for n in old.definition.get("nodes", [])}
    new_nodes = {n.get("id"): n for n in new.definition.get("nodes", [])}

    def edge_keys(d):
        return {(e.get("source"), e.get("target"), e.get("branch") or "") for e in d.get("edges", [])}

    old_edges, new_edges = edge_keys(old.definition), edge_keys(new.definition)
    lines = difflib.unified_diff(
        json.dumps(old.definition, indent=2, sort_keys=True).splitlines(),
        json.dumps(new.definition, indent=2, sort_keys=True).splitlines(),
        fromfile=f"v{old.number}",
        tofile=f"v{new.number}",
        lineterm="",
    )
    diff_lines = []
    for line in lines:
        kind = (
            "add"
            if line.startswith("+")
            else "del"
            if line.startswith("-")
            else "hunk"
            if line.startswith("@@")
            else ""
        )
        if line.startswith(("+++", "---")):
            kind = "file"
        diff_lines.append((kind, line))
    return {
        "old": old,
        "new": new,
        "nodes_added": sorted(set(new_nodes) - set(old_nodes)),
        "nodes_removed": sorted(set(old_nodes) - set(new_nodes)),
        "nodes_changed": sorted(k for k in set(old_nodes) & set(new_nodes) if old_nodes[k] != new_nodes[k]),
        "edges_added": sorted(new_edges - old_edges),
        "edges_removed": sorted(old_edges - new_edges),
        "diff_lines": diff_lines,
    }


class WorkflowRunView(WorkflowMixin, View):
    """The run form built from the workflow's declared inputs; starting redirects to the live run page."""

    def get(self, request, pk: int):
        form = RunForm(declarations=self.workflow.inputs)
        return render(request, "workflows/run_form.html", {"workflow": self.workflow, "form": form})

    def post(self, request, pk: int):
        self.require(Action.RUN)
        form = RunForm(request.POST, request.FILES, declarations=self.workflow.inputs)
        if form.is_valid():
            try:
                run = run_services.run_start(
                    workflow=self.workflow, user=request.user, inputs=form.inputs(), trigger="manual"
                )
            except ValidationError as exc:
                if hasattr(exc, "error_dict"):
                    for field, msgs in exc.message_dict.items():
                        form.add_error(field if field in form.fields else None, msgs)
                else:
                    form.add_error(None, exc.messages)
            else:
                return redirect("run_detail", pk=run.pk)
        return render(request, "workflows/run_form.html", {"workflow": self.workflow, "form": form}, status=400)


class WorkflowBatchRunView(WorkflowMixin, View):
    """Start many runs at once from a list of input objects; lands on the workflow's runs."""

    template_name = "workflows/run_batch.html"

    def get(self, request, pk: int):
        return render(request, self.template_name, {"workflow": self.workflow, "form": BatchRunForm()})

    def post(self, request, pk: int):
        self.require(Action.RUN)
        form = BatchRunForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                runs = run_services.run_start_many(
                    workflow=self.workflow, user=request.user, inputs=form.cleaned_data["inputs"], trigger="manual"
                )
            except ValidationError as exc:
                messages_ = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
                for name, errors in messages_.items():
                    form.add_error(None, [f"{name}: {error}" if name else error for error in errors])
            else:
                messages.success(request, f"Started {len(runs)} runs of “{self.workflow.name}”.")
                return redirect(f"{reverse('run_list')}?workflow={self.workflow.pk}")
        return render(request, self.template_name, {"workflow": self.workflow, "form": form}, status=400)
