"""The /api/v1/ tree: each app's api/urls.py adds its routes (issue 6)."""

from django.urls import include, path

urlpatterns = [
    path("", include("accounts.api.urls")),
    path("", include("workflows.api.urls")),
    path("", include("runs.api.urls")),
    path("", include("providers.api.urls")),
]
