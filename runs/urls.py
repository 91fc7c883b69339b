from django.urls import path

from . import views

urlpatterns = [
    path("runs/", views.RunListView.as_view(), name="run_list"),
    path("runs/<int:pk>/", views.RunDetailView.as_view(), name="run_detail"),
    path("runs/<int:pk>/events.json", views.RunEventsView.as_view(), name="run_events"),
    path("runs/<int:pk>/nodes/<str:node_id>/", views.RunNodeView.as_view(), name="run_node"),
    path("runs/<int:pk>/cancel/", views.RunCancelView.as_view(), name="run_cancel"),
    path("runs/<int:pk>/rerun/", views.RunRerunView.as_view(), name="run_rerun"),
    path("runs/<int:pk>/resume/", views.RunResumeView.as_view(), name="run_resume"),
    path("artifacts/<int:pk>/", views.ArtifactView.as_view(), name="artifact_view"),
    path("artifacts/<int:pk>/download/", views.ArtifactDownloadView.as_view(), name="artifact_download"),
]
