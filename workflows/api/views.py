from __future__ import annotations

from django.db import connection, transaction
from django.db.models import Q
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from accounts.choices import Action
from config.api import ScopedQuerysetMixin, default_workspace, parse_bool, require_action
from runs.api.serializers import RunBatchResultSerializer, RunBatchSerializer, RunCreateSerializer, RunDetailSerializer
from runs.api.views import start_batch_response, start_run_response
from workflows import services
from workflows.graph import validate_definition
from workflows.models import Edge, Node, Trigger, Workflow

from .serializers import (
    EdgeSerializer,
    ImportSerializer,
    NodeSerializer,
    NodeUpdateSerializer,
    PublishSerializer,
    TriggerSerializer,
    TriggerUpdateSerializer,
    ValidationResultSerializer,
    VersionSerializer,
    WorkflowListSerializer,
    WorkflowSerializer,
)


class WorkflowViewSet(ScopedQuerysetMixin, viewsets.ModelViewSet):
    """Workflows with their graphwright/v1 definition. Deleting one archives it (its runs stay)."""

    queryset_model = Workflow

    def scoped_queryset(self):
        queryset = Workflow.objects.for_user(self.request.user).select_related("workspace")
        if self.action == "list":
            archived = parse_bool(self.request.query_params.get("archived"))
            queryset = queryset.archived() if archived else queryset.active()
        return queryset

    def get_serializer_class(self):
        return WorkflowListSerializer if self.action == "list" else WorkflowSerializer

    def filter_queryset(self, queryset):
        if self.action != "list":
            return queryset
        params = self.request.query_params
        search = (params.get("search") or "").strip()
        if search:
            queryset = queryset.filter(Q(name__icontains=search) | Q(description__icontains=search))
        tag = (params.get("tag") or "").strip()
        if tag:
            if connection.features.supports_json_field_contains:
                queryset = queryset.filter(tags__contains=[tag])
            else:  # SQLite: match the quoted element in the stored JSON text
                import json

                queryset = queryset.filter(tags__icontains=json.dumps(tag))
        is_active = parse_bool(params.get("is_active"))
        if is_active is not None:
            queryset = queryset.filter(is_active=is_active)
        return queryset

    @extend_schema(
        parameters=[
            OpenApiParameter("search", str, description="Matches the name or description."),
            OpenApiParameter("tag", str, description="Only workflows with this tag."),
            OpenApiParameter("is_active", bool),
            OpenApiParameter("archived", bool, description="List archived workflows instead."),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        workspace = default_workspace(self.request, data.pop("workspace", None), Action.EDIT)
        definition = data.pop("definition", None)
        name = data.pop("name", None) or (definition or {}).get("name")
        serializer.instance = services.workflow_create(
            workspace=workspace, user=self.request.user, name=name, definition=definition, **data
        )

    def perform_update(self, serializer):
        workflow = serializer.instance
        require_action(self.request, workflow.workspace_id, Action.EDIT)
        data = dict(serializer.validated_data)
        data.pop("workspace", None)
        definition = data.pop("definition", None)
        serializer.instance = services.workflow_update(
            workflow=workflow, user=self.request.user, definition=definition, **data
        )

    def perform_destroy(self, instance):
        require_action(self.request, instance.workspace_id, Action.EDIT)
        services.workflow_archive(workflow=instance, user=self.request.user)

    @extend_schema(request=None, responses={200: ValidationResultSerializer})
    @action(detail=True, methods=["post"])
    def validate(self, request, pk=None):
        """Check the draft graph; every error names its node or edge."""
        workflow = self.get_object()
        errors = validate_definition(services.workflow_definition(workflow=workflow))
        return Response({"valid": not errors, "errors": [error.as_dict() for error in errors]})

    @extend_schema(request=PublishSerializer, responses={201: VersionSerializer})
    @action(detail=True, methods=["post"])
    def publish(self, request, pk=None):
        """Validate the draft and snapshot it as a new immutable version."""
        workflow = self.get_object()
        require_action(request, workflow.workspace_id, Action.EDIT)
        serializer = PublishSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        note = serializer.validated_data["note"]
        version = services.workflow_publish(workflow=workflow, user=request.user, note=note)
        return Response(VersionSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: VersionSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def versions(self, request, pk=None):
        workflow = self.get_object()
        page = self.paginate_queryset(workflow.versions.select_related("author").order_by("-number"))
        return self.get_paginated_response(VersionSerializer(page, many=True).data)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        """The workflow as a graphwright/v1 document, ready for import elsewhere."""
        return Response(services.workflow_export(workflow=self.get_object()))

    @extend_schema(request=ImportSerializer, responses={201: WorkflowSerializer})
    @action(detail=False, methods=["post"], url_path="import")
    def import_(self, request):
        data = request.data
        if isinstance(data, dict) and "document" not in data and "format" in data:
            data = {"document": data}  # a bare exported document is accepted as is
        serializer = ImportSerializer(data=data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        workspace = default_workspace(request, serializer.validated_data.get("workspace"), Action.EDIT)
        workflow = services.workflow_import(
            workspace=workspace, user=request.user, document=serializer.validated_data["document"]
        )
        return Response(
            WorkflowSerializer(workflow, context=self.get_serializer_context()).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        request={"application/json": RunCreateSerializer, "multipart/form-data": RunCreateSerializer},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Repeat a request with the same key to get the same run (409 if the body differs).",
            )
        ],
        responses={201: RunDetailSerializer, 202: RunDetailSerializer},
    )
    @action(detail=True, methods=["post"], parser_classes=[JSONParser, MultiPartParser, FormParser])
    def runs(self, request, pk=None):
        """Start a run: 202 with the queued run (async), or 201 with the finished run (sync).

        Inputs declared ``{"type": "file"}`` may be uploaded as multipart parts named after the input;
        the other inputs then go in an ``inputs`` part as a JSON string."""
        return start_run_response(request, self.get_object())

    @extend_schema(
        request=RunBatchSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Repeat a request with the same key to get the same runs (409 if the body differs). "
                "Run i of the batch gets the key <key>:<i>.",
            )
        ],
        responses={202: RunBatchResultSerializer},
    )
    @action(detail=True, methods=["post"], url_path="runs/batch")
    def runs_batch(self, request, pk=None):
        """Start a batch: one run per object of ``inputs``, all pinned to the same version.

        Every item is validated first; a bad one gets a 400 keyed ``inputs[<index>].<name>`` and no
        run is started. 202 with the queued runs, in order. Workers execute a batch in chunks with
        shared writes, so it costs far less than as many single starts."""
        return start_batch_response(request, self.get_object())

    @extend_schema(request=TriggerSerializer, responses={200: TriggerSerializer(many=True), 201: TriggerSerializer})
    @action(detail=True, methods=["get", "post"])
    def triggers(self, request, pk=None):
        from workflows.triggers import trigger_create

        workflow = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(workflow.triggers.select_related("schedule").order_by("id"))
            serializer = TriggerSerializer(page, many=True, context=self.get_serializer_context())
            return self.get_paginated_response(serializer.data)
        require_action(request, workflow.workspace_id, Action.EDIT)
        serializer = TriggerSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        trigger = trigger_create(workflow=workflow, user=request.user, **serializer.validated_data)
        return Response(
            TriggerSerializer(trigger, context=self.get_serializer_context()).data, status=status.HTTP_201_CREATED
        )


class _WorkflowChildMixin:
    """Nested under /workflows/{workflow_pk}/: the parent is looked up through the user's scope."""

    def get_workflow(self) -> Workflow:
        if not hasattr(self, "_workflow"):
            pk = self.kwargs["workflow_pk"]
            if not str(pk).isdigit():
                raise exceptions.NotFound()
            self._workflow = get_object_or_404(Workflow.objects.for_user(self.request.user), pk=pk)
        return self._workflow

    def require_edit(self) -> Workflow:
        workflow = self.get_workflow()
        require_action(self.request, workflow.workspace_id, Action.EDIT)
        return workflow


class NodeViewSet(_WorkflowChildMixin, viewsets.ModelViewSet):
    """The draft's nodes, one at a time (for editors)."""

    lookup_field = "node_id"
    lookup_value_regex = r"[-a-zA-Z0-9_]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Node.objects.none()
        return Node.objects.filter(workflow=self.get_workflow())

    def get_serializer_class(self):
        return NodeUpdateSerializer if self.action == "partial_update" else NodeSerializer

    @staticmethod
    def _as_definition(data: dict) -> dict:
        node = dict(data)
        if "node_id" in node:
            node["id"] = node.pop("node_id")
        return node

    def perform_create(self, serializer):
        workflow = self.require_edit()
        serializer.instance = services.workflow_node_add(
            workflow=workflow, user=self.request.user, node=self._as_definition(serializer.validated_data)
        )

    def perform_update(self, serializer):
        workflow = self.require_edit()
        serializer.instance = services.workflow_node_update(
            workflow=workflow,
            user=self.request.user,
            node_id=serializer.instance.node_id,
            **self._as_definition(serializer.validated_data),
        )

    def perform_destroy(self, instance):
        workflow = self.require_edit()
        services.workflow_node_remove(workflow=workflow, user=self.request.user, node_id=instance.node_id)


class EdgeViewSet(_WorkflowChildMixin, viewsets.ModelViewSet):
    """The draft's edges, one at a time (for editors)."""

    serializer_class = EdgeSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Edge.objects.none()
        return Edge.objects.filter(workflow=self.get_workflow()).select_related("source", "target")

    @staticmethod
    def _flat(data: dict) -> dict:
        flat = {}
        for name in ("source", "target"):
            if name in data:
                flat[name] = data[name]["node_id"]
        if "branch" in data:
            flat["branch"] = data["branch"]
        return flat

    def perform_create(self, serializer):
        workflow = self.require_edit()
        serializer.instance = services.workflow_edge_add(
            workflow=workflow, user=self.request.user, **self._flat(serializer.validated_data)
        )

    @staticmethod
    def _key(edge: Edge) -> dict:
        return {"source": edge.source.node_id, "target": edge.target.node_id, "branch": edge.branch or None}

    def perform_update(self, serializer):
        workflow = self.require_edit()
        edge = serializer.instance
        changed = {**self._key(edge), **self._flat(serializer.validated_data)}
        with transaction.atomic():  # an edge is its endpoints: changing one is remove + add
            services.workflow_edge_remove(workflow=workflow, user=self.request.user, **self._key(edge))
            serializer.instance = services.workflow_edge_add(workflow=workflow, user=self.request.user, **changed)

    def perform_destroy(self, instance):
        workflow = self.require_edit()
        services.workflow_edge_remove(workflow=workflow, user=self.request.user, **self._key(instance))


class TriggerViewSet(
    ScopedQuerysetMixin, mixins.UpdateModelMixin, mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet
):
    """Webhook and schedule triggers. Create one with ``POST /workflows/{id}/triggers/``."""

    queryset_model = Trigger
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def scoped_queryset(self):
        return Trigger.objects.for_user(self.request.user).select_related("workflow", "schedule")

    def get_serializer_class(self):
        return TriggerSerializer if self.action in {"list", "retrieve"} else TriggerUpdateSerializer

    def perform_update(self, serializer):
        from workflows.triggers import trigger_update

        require_action(self.request, serializer.instance.workflow.workspace_id, Action.EDIT)
        serializer.instance = trigger_update(
            trigger=serializer.instance, user=self.request.user, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        from workflows.triggers import trigger_delete

        require_action(self.request, instance.workflow.workspace_id, Action.EDIT)
        trigger_delete(trigger=instance, user=self.request.user)
