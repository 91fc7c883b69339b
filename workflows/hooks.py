"""``POST /hooks/{token}/``: start the workflow that owns a webhook trigger, the JSON body as inputs."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import HookThrottle

from .choices import TriggerKind
from .models import Trigger
from .triggers import TriggerInactive, trigger_fire


class WebhookInactive(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This webhook is inactive."
    default_code = "inactive"


_HookResponse = inline_serializer(
    "WebhookRunResponse",
    {
        "run_id": serializers.IntegerField(),
        "status": serializers.CharField(),
        "outputs": serializers.JSONField(required=False, allow_null=True),
        "error": serializers.CharField(required=False, allow_blank=True),
    },
)


class WebhookView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [HookThrottle]
    parser_classes = [JSONParser]

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={200: _HookResponse, 202: _HookResponse},
        auth=[],
        description="Start the workflow of this webhook trigger with the JSON body as inputs. "
        "202 with the run id, or 200 with the finished run when the trigger responds with the result.",
    )
    def post(self, request, token: str):
        trigger = Trigger.objects.select_related("workflow").filter(token=token, kind=TriggerKind.WEBHOOK).first()
        if trigger is None:
            raise exceptions.NotFound("No webhook with this URL.")
        body = request.data if request.body else {}
        if not isinstance(body, dict):
            raise exceptions.ValidationError({"non_field_errors": ["The body must be a JSON object (the inputs)."]})
        mode = "sync" if trigger.respond_with_result else "async"
        try:
            run = trigger_fire(trigger=trigger, inputs=body, mode=mode)
        except TriggerInactive as exc:
            raise WebhookInactive(str(exc)) from None
        if trigger.respond_with_result:
            run.refresh_from_db()
            return Response(
                {"run_id": run.pk, "status": run.status, "outputs": run.outputs, "error": run.error},
                status=status.HTTP_200_OK,
            )
        return Response({"run_id": run.pk, "status": run.status}, status=status.HTTP_202_ACCEPTED)


webhook = WebhookView.as_view()
