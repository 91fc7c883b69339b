from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("credentials", views.CredentialViewSet, basename="credential")
router.register("collections", views.CollectionViewSet, basename="collection")

documents = views.DocumentViewSet

urlpatterns = [
    path(
        "collections/<int:collection_pk>/documents/",
        documents.as_view({"get": "list", "post": "create"}),
        name="document-list",
    ),
    path(
        "collections/<int:collection_pk>/documents/<int:pk>/",
        documents.as_view({"get": "retrieve", "delete": "destroy"}),
        name="document-detail",
    ),
    *router.urls,
]
