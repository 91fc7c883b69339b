from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("workflows", views.WorkflowViewSet, basename="workflow")
router.register("triggers", views.TriggerViewSet, basename="trigger")

nodes = views.NodeViewSet
edges = views.EdgeViewSet

urlpatterns = [
    path("workflows/<int:workflow_pk>/nodes/", nodes.as_view({"get": "list", "post": "create"}), name="node-list"),
    path(
        "workflows/<int:workflow_pk>/nodes/<str:node_id>/",
        nodes.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="node-detail",
    ),
    path("workflows/<int:workflow_pk>/edges/", edges.as_view({"get": "list", "post": "create"}), name="edge-list"),
    path(
        "workflows/<int:workflow_pk>/edges/<int:pk>/",
        edges.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="edge-detail",
    ),
    *router.urls,
]
