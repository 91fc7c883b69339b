"""Pages for runs: the list, the live run page, its controls, node panels and artifacts.

The run page renders everything stored server-side (node statuses, the timeline, tokens streamed
so far) and the last event ``seq``; ``static/js/run.js`` then resumes the WebSocket stream after
that seq, so reloading mid-run loses nothing.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views import View
from django.views.generic import ListView

from accounts.choices import Action
from accounts.permissions import can, require
from workflows import diagram
from workflows.models import Workflow
from workflows.nodes import get_node_type
from workflows.views import error_text

from . import services
from .choices import NODE_FINAL, NodeRunStatus, RunStatus, TriggerType
from .models import Artifact, NodeRun, Run

TOKEN_EVENT = "llm.token"  # noqa: S105 (an event type, not a secret)
TIMELINE_LIMIT = 300
PREVIEW_BYTES = 200_000


class RunMixin(LoginRequiredMixin):
    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.run = get_object_or_404(
            Run.objects.for_user(request.user).select_related("workflow", "version", "workspace"), pk=kwargs["pk"]
        )
        return super().dispatch(request, *args, **kwargs)

    def require(self, action: str) -> None:
        require(self.request.user, self.run.workspace_id, action)


class RunListView(LoginRequiredMixin, ListView):
    template_name = "runs/list.html"
    context_object_name = "runs"
    paginate_by = 25

    def get_queryset(self):
        qs = Run.objects.for_user(self.request.user).select_related("workflow", "created_by")
        params = self.request.GET
        if (workflow := params.get("workflow", "")).isdigit():
            qs = qs.filter(workflow_id=int(workflow))
        if params.get("status") in RunStatus.values:
            qs = qs.filter(status=params["status"])
        if params.get("trigger") in TriggerType.values:
            qs = qs.filter(trigger=params["trigger"])
        return qs

    def get_context_data(self, **kwargs):
        ctx = super().get_context_data(**kwargs)
        query = self.request.GET.copy()
        query.pop("page", None)
        ctx.update(
            workflows=Workflow.objects.for_user(self.request.user).only("id", "name").order_by("name"),
            statuses=RunStatus.choices,
            triggers=TriggerType.choices,
            selected_workflow=self.request.GET.get("workflow", ""),
            selected_status=self.request.GET.get("status", ""),
            selected_trigger=self.request.GET.get("trigger", ""),
            querystring=query.urlencode(),
            filtered=bool(query),
        )
        return ctx


def node_panels(run: Run, definition: dict[str, Any], tokens: dict[str, str]) -> list[dict[str, Any]]:
    """One panel per node of the pinned definition, in definition order, with its NodeRun if any."""
    node_runs = {nr.node_id: nr for nr in run.node_runs.all()}
    artifacts_by_node: dict[int, list[Artifact]] = {}
    for artifact in run.artifacts.all():
        if artifact.node_run_id:
            artifacts_by_node.setdefault(artifact.node_run_id, []).append(artifact)
    panels = []
    for order, spec in enumerate(definition.get("nodes", [])):
        node_id = str(spec.get("id"))
        panels.append(node_panel(run, spec, node_runs.get(node_id), tokens.get(node_id, ""), artifacts_by_node, order))
    return panels


def node_panel(run, spec, node_run, streamed, artifacts_by_node, order=0) -> dict[str, Any]:
    node_type = get_node_type(str(spec.get("type")))
    status = node_run.status if node_run else NodeRunStatus.PENDING
    return {
        "order": order,
        "id": spec.get("id"),
        "name": spec.get("name") or "",
        "type": spec.get("type"),
        "icon": node_type.icon if node_type else "?",
        "label": node_type.label if node_type else spec.get("type"),
        "status": status,
        "node_run": node_run,
        "input_json": _pretty(node_run.input) if node_run and node_run.input is not None else "",
        "output_json": _pretty(node_run.output) if node_run and node_run.output is not None else "",
        "streamed": streamed,
        "artifacts": artifacts_by_node.get(node_run.pk, []) if node_run else [],
        "waiting": status == NodeRunStatus.WAITING,
        "is_final": status in NODE_FINAL,
    }


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def streamed_tokens(run: Run, upto: int | None = None) -> dict[str, str]:
    """The text each node has streamed so far (up to event ``upto``), rebuilt from its stored
    ``llm.token`` events."""
    tokens: dict[str, list[str]] = {}
    events = run.events.filter(type=TOKEN_EVENT)
    if upto is not None:
        events = events.filter(seq__lte=upto)
    for data in events.order_by("seq").values_list("data", flat=True):
        if isinstance(data, dict):
            tokens.setdefault(str(data.get("node_id", "")), []).append(str(data.get("text", "")))
    return {node: "".join(parts) for node, parts in tokens.items()}


@contextlib.contextmanager
def snapshot():
    """Several reads that see the database as of one moment: a read-only REPEATABLE READ
    transaction on PostgreSQL, where each statement would otherwise see its own. Elsewhere (SQLite,
    or inside a transaction already) the reads go as they are."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


class RunDetailView(RunMixin, View):
    def get(self, request, pk: int):
        run = self.run
        # The stream position first, then everything else: the page shows state at least as new as
        # last_seq and replays every later event on top. Read the other way round, events committed
        # between the reads would be in neither (a run shown running that is already waiting).
        with snapshot():  # and the run and its nodes as of one moment (no waiting node under a running run)
            last_seq = run.events.order_by("-seq").values_list("seq", flat=True).first() or 0
            run.refresh_from_db()
            definition = run.version.definition or {}
            tokens = streamed_tokens(run, upto=last_seq)
            panels = node_panels(run, definition, tokens)
            timeline = list(
                run.events.exclude(type=TOKEN_EVENT).filter(seq__lte=last_seq).order_by("-seq")[:TIMELINE_LIMIT]
            )
        statuses = {p["id"]: p["status"] for p in panels}
        timeline.reverse()
        total = len(panels)
        done = sum(1 for p in panels if p["is_final"])
        user = request.user
        ctx = {
            "run": run,
            "workflow": run.workflow,
            "diagram": diagram.build(definition, statuses=statuses),
            "panels": panels,
            "timeline": timeline,
            "last_seq": last_seq,
            "progress_done": done,
            "progress_total": total,
            "progress_percent": int(done * 100 / total) if total else (100 if run.is_finished else 0),
            "artifacts": run.artifacts.all(),
            "waiting_nodes": [p for p in panels if p["waiting"]],
            "can_run": can(user, run.workspace_id, Action.RUN),
            "outputs_json": _pretty(run.outputs) if run.outputs is not None else "",
            "inputs_json": _pretty(run.inputs) if run.inputs else "",
            "children": run.children.all()[:20],
            "reruns": run.reruns.all()[:10],
            "config": {
                "runId": run.pk,
                "lastSeq": last_seq,
                "finished": run.is_finished,
                "totalNodes": total,
                "wsPath": f"/ws/runs/{run.pk}/",
                "eventsUrl": reverse("run_events", args=[run.pk]),
                "nodeUrl": reverse("run_node", args=[run.pk, "__node__"]),
                "statuses": statuses,
            },
        }
        return render(request, "runs/detail.html", ctx)


class RunEventsView(RunMixin, View):
    """Stored events after ``?after=<seq>`` as JSON: the page's fallback when the WebSocket fails."""

    def get(self, request, pk: int):
        after = request.GET.get("after", "0")
        after_seq = int(after) if after.isdigit() else 0
        events = [e.as_message() for e in self.run.events.filter(seq__gt=after_seq).order_by("seq")[:500]]
        self.run.refresh_from_db(fields=["status"])
        return JsonResponse({"events": events, "status": self.run.status, "finished": self.run.is_finished})


class RunNodeView(RunMixin, View):
    """One node's panel as an HTML fragment; the live page swaps it in when the node changes."""

    def get(self, request, pk: int, node_id: str):
        definition = self.run.version.definition or {}
        spec = next((n for n in definition.get("nodes", []) if str(n.get("id")) == node_id), None)
        if spec is None:
            raise Http404("No such node in this run")
        node_run = NodeRun.objects.filter(run=self.run, node_id=node_id).first()
        artifacts: dict[int, list[Artifact]] = {}
        if node_run:
            artifacts[node_run.pk] = list(node_run.artifacts.all())
        streamed = streamed_tokens(self.run).get(node_id, "")
        panel = node_panel(self.run, spec, node_run, streamed, artifacts)
        ctx = {"run": self.run, "panel": panel, "can_run": can(request.user, self.run.workspace_id, Action.RUN)}
        return render(request, "runs/_node_panel.html", ctx)


class RunCancelView(RunMixin, View):
    def post(self, request, pk: int):
        self.require(Action.RUN)
        try:
            services.run_cancel(run=self.run, user=request.user)
        except ValidationError as exc:
            messages.error(request, f"Could not cancel: {error_text(exc)}")
        else:
            messages.success(request, "Cancel requested.")
        return redirect("run_detail", pk=pk)


class RunRerunView(RunMixin, View):
    def post(self, request, pk: int):
        self.require(Action.RUN)
        from_node = request.POST.get("from_node") or None
        node_ids = {str(n.get("id")) for n in (self.run.version.definition or {}).get("nodes", [])}
        if from_node and from_node not in node_ids:
            messages.error(request, f"There is no node “{from_node}” in this run.")
            return redirect("run_detail", pk=pk)
        try:
            new_run = services.run_rerun(run=self.run, from_node=from_node, user=request.user)
        except ValidationError as exc:
            messages.error(request, f"Could not rerun: {error_text(exc)}")
            return redirect("run_detail", pk=pk)
        messages.success(request, f"Rerun of #{self.run.pk}" + (f" from “{from_node}”." if from_node else "."))
        return redirect("run_detail", pk=new_run.pk)


class RunResumeView(RunMixin, View):
    """Approve or reject a node waiting for a human."""

    def post(self, request, pk: int):
        self.require(Action.RUN)
        decision = request.POST.get("decision", "")
        node_id = request.POST.get("node", "")
        if decision not in {"approve", "reject"} or not node_id:
            messages.error(request, "Choose approve or reject for a waiting node.")
            return redirect("run_detail", pk=pk)
        data = {"comment": request.POST["comment"]} if request.POST.get("comment") else {}
        try:
            services.run_resume(run=self.run, node_id=node_id, decision=decision, data=data, user=request.user)
        except ValidationError as exc:
            messages.error(request, f"Could not {decision}: {error_text(exc)}")
        else:
            messages.success(request, f"{'Approved' if decision == 'approve' else 'Rejected'} “{node_id}”.")
        return redirect("run_detail", pk=pk)


class ArtifactMixin(LoginRequiredMixin):
    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.artifact = get_object_or_404(
            Artifact.objects.for_user(request.user).select_related("run"), pk=kwargs["pk"]
        )
        return super().dispatch(request, *args, **kwargs)


class ArtifactView(ArtifactMixin, View):
    """Shows a text or JSON artifact in the page (never served as HTML: no script from a run runs here)."""

    def get(self, request, pk: int):
        artifact = self.artifact
        preview = None
        textual = (
            artifact.content_type.startswith("text/")
            or artifact.content_type
            in {
                "application/json",
                "application/x-ndjson",
            }
            or artifact.name.endswith((".json", ".txt", ".md", ".csv"))
        )
        if textual and artifact.size <= PREVIEW_BYTES:
            with artifact.file.open("rb") as handle:
                raw = handle.read(PREVIEW_BYTES).decode("utf-8", errors="replace")
            if artifact.content_type == "application/json" or artifact.name.endswith(".json"):
                with contextlib.suppress(json.JSONDecodeError):
                    raw = _pretty(json.loads(raw))
            preview = raw
        return render(request, "runs/artifact.html", {"artifact": artifact, "run": artifact.run, "preview": preview})


class ArtifactDownloadView(ArtifactMixin, View):
    def get(self, request, pk: int):
        artifact = self.artifact
        response = FileResponse(artifact.file.open("rb"), as_attachment=True, filename=artifact.name)
        # Served as a download only, so an HTML artifact cannot run script in our origin.
        response["Content-Type"] = "application/octet-stream"
        response["X-Content-Type-Options"] = "nosniff"
        return response
