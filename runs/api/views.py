from __future__ import annotations

import hashlib
from typing import Any

from django.db import IntegrityError, transaction
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.audit import audit
from accounts.choices import Action
from config.api import Conflict, ScopedQuerysetMixin, canonical_hash, client_ip, parse_int, require_action
from runs.choices import RUN_FINAL, RunStatus, TriggerType
from runs.models import Artifact, Run, RunEvent
from workflows.models import Workflow

from .serializers import (
    ArtifactSerializer,
    RerunSerializer,
    ResumeSerializer,
    RunBatchSerializer,
    RunCreateSerializer,
    RunDetailSerializer,
    RunEventSerializer,
    RunSerializer,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENTS_PAGE = 1000


def _file_inputs(workflow: Workflow) -> set[str]:
    declared = workflow.inputs or {}
    return {name for name, spec in declared.items() if isinstance(spec, dict) and spec.get("type") == "file"}


def _replay(run: Run, request_hash: str, mode: str) -> Response:
    if run.request_hash != request_hash:
        raise Conflict("This Idempotency-Key was already used with a different request body.")
    code = status.HTTP_201_CREATED if mode == "sync" else status.HTTP_202_ACCEPTED
    return Response(RunDetailSerializer(run).data, status=code, headers={"Idempotent-Replayed": "true"})


def start_run_response(request, workflow: Workflow, *, trigger: str = TriggerType.API) -> Response:
    """POST /workflows/{id}/runs/: validate, honour Idempotency-Key, store uploaded file inputs, start."""
    from runs.services import artifact_save, run_execute, run_start

    require_action(request, workflow.workspace, Action.RUN)
    serializer = RunCreateSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    inputs: dict[str, Any] = dict(data["inputs"])
    mode: str = data["mode"]

    file_names = _file_inputs(workflow)
    uploads = {name: request.FILES[name] for name in request.FILES}
    unknown = sorted(set(uploads) - file_names)
    if unknown:
        raise exceptions.ValidationError({name: ["Not a file input of this workflow."] for name in unknown})
    contents: dict[str, bytes] = {}
    for name, upload in uploads.items():
        contents[name] = upload.read()
        inputs[name] = {
            "name": upload.name,
            "content_type": upload.content_type or "application/octet-stream",
            "size": len(contents[name]),
            "sha256": hashlib.sha256(contents[name]).hexdigest(),
        }

    key = (request.headers.get(IDEMPOTENCY_HEADER) or "").strip()
    if len(key) > 255:
        raise exceptions.ValidationError({IDEMPOTENCY_HEADER: ["At most 255 characters."]})
    request_hash = (
        canonical_hash({"workflow": workflow.pk, "inputs": inputs, "mode": mode, "callback_url": data["callback_url"]})
        if key
        else ""
    )
    if key:
        existing = Run.objects.filter(created_by=request.user, idempotency_key=key).first()
        if existing is not None:
            return _replay(existing, request_hash, mode)

    start = {
        "workflow": workflow,
        "user": request.user,
        "inputs": inputs,
        "trigger": trigger,
        "idempotency_key": key,
        "request_hash": request_hash,
        "callback_url": data["callback_url"],
    }
    try:
        if not contents:  # run_start commits on its own; a sync run executes after that commit
            run = run_start(mode=mode, **start)
        else:  # uploads are stored with the queued run, before it may execute
            with transaction.atomic():
                run = run_start(mode="async", **start)
                stored = dict(run.inputs or inputs)
                for name, content in contents.items():
                    upload = uploads[name]
                    artifact = artifact_save(
                        run=run, name=upload.name, content=content, content_type=inputs[name]["content_type"]
                    )
                    stored[name] = {**inputs[name], "artifact_id": artifact.pk}
                Run.objects.filter(pk=run.pk).update(inputs=stored)
                run.inputs = stored
    except IntegrityError:
        if not key:
            raise
        existing = Run.objects.filter(created_by=request.user, idempotency_key=key).first()
        if existing is None:
            raise
        return _replay(existing, request_hash, mode)
    if contents and mode == "sync":
        run = run_execute(run=Run.objects.get(pk=run.pk), force=True)
    run.refresh_from_db()
    code = status.HTTP_201_CREATED if mode == "sync" else status.HTTP_202_ACCEPTED
    return Response(RunDetailSerializer(run, context={"request": request}).data, status=code)


def start_batch_response(request, workflow: Workflow) -> Response:
    """POST /workflows/{id}/runs/batch/: start one run per inputs object, all or none."""
    from runs.services import run_start_many

    require_action(request, workflow.workspace, Action.RUN)
    serializer = RunBatchSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    items: list[dict[str, Any]] = serializer.validated_data["inputs"]
    callback_url: str = serializer.validated_data["callback_url"]
    key = (request.headers.get(IDEMPOTENCY_HEADER) or "").strip()
    if len(key) > 240:  # each run's key is "<key>:<index>"
        raise exceptions.ValidationError({IDEMPOTENCY_HEADER: ["At most 240 characters for a batch."]})
    request_hash = (
        canonical_hash({"workflow": workflow.pk, "batch": items, "callback_url": callback_url}) if key else ""
    )

    def replay() -> Response | None:
        first = Run.objects.filter(created_by=request.user, idempotency_key=f"{key}:0").first()
        if first is None:
            return None
        if first.request_hash != request_hash:
            raise Conflict("This Idempotency-Key was already used with a different request body.")
        keys = [f"{key}:{index}" for index in range(len(items))]
        runs = list(Run.objects.filter(created_by=request.user, idempotency_key__in=keys).order_by("id"))
        body = {"count": len(runs), "runs": RunSerializer(runs, many=True).data}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Idempotent-Replayed": "true"})

    if key and (replayed := replay()) is not None:
        return replayed
    try:
        runs = run_start_many(
            workflow=workflow,
            user=request.user,
            inputs=items,
            trigger=TriggerType.API,
            idempotency_key=key,
            request_hash=request_hash,
            callback_url=callback_url,
        )
    except IntegrityError:  # the same key, sent twice at once: the other request created the runs
        if not key or (replayed := replay()) is None:
            raise
        return replayed
    body = {"count": len(runs), "runs": RunSerializer(runs, many=True, context={"request": request}).data}
    return Response(body, status=status.HTTP_202_ACCEPTED)


class RunViewSet(ScopedQuerysetMixin, mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """Runs of the workflows the user can see. Starting one is ``POST /workflows/{id}/runs/``."""

    queryset_model = Run

    def scoped_queryset(self):
        queryset = Run.objects.for_user(self.request.user).select_related("version", "created_by")
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("node_runs")
        return queryset

    def get_serializer_class(self):
        return RunSerializer if self.action == "list" else RunDetailSerializer

    def filter_queryset(self, queryset):
        if self.action != "list":
            return queryset
        params = self.request.query_params
        workflow = parse_int("workflow", params.get("workflow"))
        if workflow is not None:
            queryset = queryset.filter(workflow_id=workflow)
        if params.get("status"):
            if params["status"] not in RunStatus.values:
                raise exceptions.ValidationError({"status": [f"Choose one of {', '.join(RunStatus.values)}."]})
            queryset = queryset.filter(status=params["status"])
        if params.get("trigger"):
            if params["trigger"] not in TriggerType.values:
                raise exceptions.ValidationError({"trigger": [f"Choose one of {', '.join(TriggerType.values)}."]})
            queryset = queryset.filter(trigger=params["trigger"])
        return queryset

    @extend_schema(
        parameters=[
            OpenApiParameter("workflow", int, description="Only runs of this workflow."),
            OpenApiParameter("status", str, enum=RunStatus.values),
            OpenApiParameter("trigger", str, enum=TriggerType.values),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def perform_destroy(self, instance: Run) -> None:
        from runs.services import run_delete

        require_action(self.request, instance.workspace_id, Action.EDIT)
        if not instance.is_finished:
            raise Conflict("Cancel the run before deleting it.")
        run_delete(run=instance, user=self.request.user)

    def _respond(self, run: Run, code: int = status.HTTP_200_OK) -> Response:
        run = self.scoped_queryset().prefetch_related("node_runs").get(pk=run.pk)
        return Response(RunDetailSerializer(run, context=self.get_serializer_context()).data, status=code)

    @extend_schema(request=None, responses={200: RunDetailSerializer})
    @action(detail=True, methods=["post"])
    def execute(self, request, pk=None):
        """Execute a queued run now, in this request."""
        from runs.services import run_execute

        run = self.get_object()
        require_action(request, run.workspace_id, Action.RUN)
        if run.status != RunStatus.QUEUED:
            raise Conflict(f"Only a queued run can be executed; this one is {run.status}.")
        return self._respond(run_execute(run=run))

    @extend_schema(request=None, responses={200: RunDetailSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        from runs.services import run_cancel

        run = self.get_object()
        require_action(request, run.workspace_id, Action.RUN)
        if run.status in RUN_FINAL:
            raise Conflict(f"The run already ended ({run.status}).")
        return self._respond(run_cancel(run=run, user=request.user))

    @extend_schema(request=RerunSerializer, responses={202: RunDetailSerializer})
    @action(detail=True, methods=["post"])
    def rerun(self, request, pk=None):
        """Start a new run on the same version, reusing outputs upstream of ``from_node``."""
        from runs.services import run_rerun

        run = self.get_object()
        require_action(request, run.workspace_id, Action.RUN)
        serializer = RerunSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        new_run = run_rerun(run=run, from_node=serializer.validated_data.get("from_node") or None, user=request.user)
        return self._respond(new_run, status.HTTP_202_ACCEPTED)

    @extend_schema(request=ResumeSerializer, responses={200: RunDetailSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        """Approve or reject a node waiting for a human."""
        from runs.services import run_resume

        run = self.get_object()
        require_action(request, run.workspace_id, Action.RUN)
        serializer = ResumeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if run.status != RunStatus.WAITING:
            raise Conflict(f"The run is not waiting for a decision; it is {run.status}.")
        resumed = run_resume(
            run=run, node_id=data["node"], decision=data["decision"], data=data["data"], user=request.user
        )
        return self._respond(resumed)

    @extend_schema(
        parameters=[OpenApiParameter("after", int, description="Only events with a larger seq (default 0).")],
        responses={200: RunEventSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def events(self, request, pk=None):
        """The run's stored events in order, at most 1000 after ``after``."""
        run = self.get_object()
        after = parse_int("after", request.query_params.get("after")) or 0
        events = RunEvent.objects.filter(run=run, seq__gt=after).order_by("seq")[:EVENTS_PAGE]
        return Response(RunEventSerializer(events, many=True).data)

    @extend_schema(responses={200: ArtifactSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def artifacts(self, request, pk=None):
        run = self.get_object()
        queryset = Artifact.objects.filter(run=run).order_by("id")
        page = self.paginate_queryset(queryset)
        serializer = ArtifactSerializer(page, many=True, context=self.get_serializer_context())
        return self.get_paginated_response(serializer.data)


def artifact_delete(*, artifact: Artifact, user, ip_address: str | None = None) -> None:
    with transaction.atomic():
        run = artifact.run
        audit(
            action="artifact.deleted",
            actor=user,
            workspace=run.workspace_id,
            target=artifact,
            data={"run": run.pk, "name": artifact.name},
            ip_address=ip_address,
        )
        storage, name = artifact.file.storage, artifact.file.name
        artifact.delete()
        transaction.on_commit(lambda: storage.delete(name) if name else None)


class ArtifactViewSet(
    ScopedQuerysetMixin, mixins.DestroyModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    queryset_model = Artifact
    serializer_class = ArtifactSerializer

    def scoped_queryset(self):
        return Artifact.objects.for_user(self.request.user).select_related("run")

    def perform_destroy(self, instance: Artifact) -> None:
        require_action(self.request, instance.run.workspace_id, Action.EDIT)
        artifact_delete(artifact=instance, user=self.request.user, ip_address=client_ip(self.request))

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY)})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        artifact = self.get_object()
        try:
            handle = artifact.file.open("rb")
        except (FileNotFoundError, ValueError):
            raise exceptions.NotFound("The artifact's file is missing.") from None
        return FileResponse(handle, as_attachment=True, filename=artifact.name, content_type=artifact.content_type)
