from __future__ import annotations

from typing import Any

from django.db.models import Count
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from accounts.choices import Action
from config.api import ScopedQuerysetMixin, default_workspace, require_action
from providers.models import Collection, Credential, Document

from .serializers import (
    CollectionSerializer,
    CredentialSerializer,
    CredentialTestSerializer,
    DocumentSerializer,
    SearchHitSerializer,
    SearchSerializer,
)


class CredentialViewSet(ScopedQuerysetMixin, viewsets.ModelViewSet):
    """Secrets for outside services. The secret is write-only; reads carry its mask."""

    queryset_model = Credential
    serializer_class = CredentialSerializer

    def perform_create(self, serializer):
        from providers.credentials import credential_create

        data = dict(serializer.validated_data)
        workspace = default_workspace(self.request, data.pop("workspace", None), Action.EDIT)
        serializer.instance = credential_create(workspace=workspace, user=self.request.user, **data)

    def perform_update(self, serializer):
        from providers.credentials import credential_update

        require_action(self.request, serializer.instance.workspace_id, Action.EDIT)
        data = dict(serializer.validated_data)
        data.pop("workspace", None)
        serializer.instance = credential_update(credential=serializer.instance, user=self.request.user, **data)

    def perform_destroy(self, instance):
        from providers.credentials import credential_delete

        require_action(self.request, instance.workspace_id, Action.EDIT)
        credential_delete(credential=instance, user=self.request.user)

    @extend_schema(request=None, responses={200: CredentialTestSerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """Try the credential against its service; the outcome is stored on it."""
        from providers.credentials import credential_test

        credential = self.get_object()
        require_action(request, credential.workspace_id, Action.EDIT)
        outcome = credential_test(credential=credential, user=request.user)
        credential.refresh_from_db()
        ok, message = _test_outcome(outcome, credential)
        return Response({"ok": ok, "message": message, "tested_at": credential.last_tested_at})


def _test_outcome(outcome: Any, credential: Credential) -> tuple[bool, str]:
    if isinstance(outcome, tuple) and len(outcome) == 2:
        return bool(outcome[0]), str(outcome[1])
    if isinstance(outcome, dict):
        return bool(outcome.get("ok")), str(outcome.get("message", ""))
    if isinstance(outcome, bool):
        return outcome, credential.last_test_message
    return bool(credential.last_test_ok), credential.last_test_message


class CollectionViewSet(ScopedQuerysetMixin, viewsets.ModelViewSet):
    """Document collections for vector search."""

    queryset_model = Collection
    serializer_class = CollectionSerializer

    def scoped_queryset(self):
        return Collection.objects.for_user(self.request.user).annotate(document_total=Count("documents"))

    def perform_create(self, serializer):
        from providers.collections import collection_create

        data = dict(serializer.validated_data)
        workspace = default_workspace(self.request, data.pop("workspace", None), Action.EDIT)
        serializer.instance = collection_create(workspace=workspace, user=self.request.user, **data)

    def perform_update(self, serializer):
        from providers.collections import collection_update

        require_action(self.request, serializer.instance.workspace_id, Action.EDIT)
        data = dict(serializer.validated_data)
        data.pop("workspace", None)
        serializer.instance = collection_update(collection=serializer.instance, user=self.request.user, **data)

    def perform_destroy(self, instance):
        from providers.collections import collection_delete

        require_action(self.request, instance.workspace_id, Action.EDIT)
        collection_delete(collection=instance, user=self.request.user)

    @extend_schema(request=SearchSerializer, responses={200: SearchHitSerializer(many=True)})
    @action(detail=True, methods=["post"])
    def search(self, request, pk=None):
        """The ``k`` chunks closest in meaning to ``query``."""
        from providers.collections import collection_search

        collection = self.get_object()
        serializer = SearchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        hits = collection_search(collection=collection, **serializer.validated_data)
        return Response(SearchHitSerializer(hits, many=True).data)


class DocumentViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Documents of one collection: add text or upload a text, Markdown or PDF file."""

    serializer_class = DocumentSerializer
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_collection(self) -> Collection:
        if not hasattr(self, "_collection"):
            self._collection = get_object_or_404(
                Collection.objects.for_user(self.request.user), pk=self.kwargs["collection_pk"]
            )
        return self._collection

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Document.objects.none()
        return Document.objects.filter(collection=self.get_collection())

    def create(self, request, *args, **kwargs):
        from providers.collections import document_add

        collection = self.get_collection()
        require_action(request, collection.workspace_id, Action.EDIT)
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        document = document_add(collection=collection, user=request.user, **serializer.validated_data)
        return Response(self.get_serializer(document).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        from providers.collections import document_delete

        require_action(self.request, self.get_collection().workspace_id, Action.EDIT)
        document_delete(document=instance, user=self.request.user)
