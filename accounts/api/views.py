from __future__ import annotations

from django.contrib.auth import authenticate
from django.db.models import Q
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.audit import audit
from accounts.models import AuditLog, Membership, Workspace
from accounts.services import api_token_create
from config.api import AuthTokenThrottle, client_ip, parse_int

from .serializers import AuditLogSerializer, TokenRequestSerializer, TokenResponseSerializer, WorkspaceSerializer


class TokenView(APIView):
    """Exchange a username and password for a new API token."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [AuthTokenThrottle]

    def get_authenticate_header(self, request) -> str:
        return 'Token realm="api"'  # a wrong password is a 401, not a 403

    @extend_schema(request=TokenRequestSerializer, responses={201: TokenResponseSerializer}, auth=[])
    def post(self, request):
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = authenticate(request._request, username=data["username"], password=data["password"])
        if user is None or not user.is_active:
            audit(action="auth.failed", data={"username": data["username"][:150]}, ip_address=client_ip(request))
            raise exceptions.AuthenticationFailed("Wrong username or password.")
        token, key = api_token_create(user=user, name=data["name"])
        audit(action="auth.token_signin", actor=user, target=token, ip_address=client_ip(request))
        body = {"token": key, "name": token.name, "prefix": token.key_prefix, "created_at": token.created_at}
        return Response(TokenResponseSerializer(body).data, status=status.HTTP_201_CREATED)


class WorkspaceViewSet(viewsets.ReadOnlyModelViewSet):
    """The workspaces the requesting user belongs to, with their role in each."""

    serializer_class = WorkspaceSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Workspace.objects.none()
        return Workspace.objects.for_user(self.request.user)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if getattr(self.request, "user", None) is not None and self.request.user.is_authenticated:
            memberships = Membership.objects.filter(user=self.request.user)
            context["roles"] = dict(memberships.values_list("workspace_id", "role"))
        return context


class AuditLogViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The audit log of the workspaces the user owns, plus the user's own sign-ins and token use."""

    serializer_class = AuditLogSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AuditLog.objects.none()
        user = self.request.user
        owned = AuditLog.objects.for_user(user).values("pk")
        return AuditLog.objects.filter(Q(pk__in=owned) | Q(actor=user, workspace__isnull=True)).select_related("actor")

    @extend_schema(
        parameters=[
            OpenApiParameter("workspace", int, description="Only entries of this workspace."),
            OpenApiParameter("action", str, description="Only this action, e.g. `workflow.published`."),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def filter_queryset(self, queryset):
        if self.action != "list":
            return queryset
        params = self.request.query_params
        workspace = parse_int("workspace", params.get("workspace"))
        if workspace is not None:
            queryset = queryset.filter(workspace_id=workspace)
        if params.get("action"):
            queryset = queryset.filter(action=params["action"])
        return queryset
