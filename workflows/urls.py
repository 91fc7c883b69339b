from django.urls import path

from . import views

urlpatterns = [
    path("", views.DashboardView.as_view(), name="dashboard"),
    path("workflows/", views.WorkflowListView.as_view(), name="workflow_list"),
    path("workflows/new/", views.WorkflowCreateView.as_view(), name="workflow_create"),
    path("workflows/import/", views.WorkflowImportView.as_view(), name="workflow_import"),
    path("workflows/gallery/", views.GalleryView.as_view(), name="workflow_gallery"),
    path("workflows/gallery/<slug:slug>/use/", views.GalleryUseView.as_view(), name="workflow_gallery_use"),
    path("workflows/<int:pk>/", views.WorkflowDetailView.as_view(), name="workflow_detail"),
    path("workflows/<int:pk>/settings/", views.WorkflowSettingsView.as_view(), name="workflow_settings"),
    path("workflows/<int:pk>/nodes/add/", views.NodeAddView.as_view(), name="workflow_node_add"),
    path("workflows/<int:pk>/nodes/<slug:node_id>/", views.NodeEditView.as_view(), name="workflow_node"),
    path(
        "workflows/<int:pk>/nodes/<slug:node_id>/delete/", views.NodeDeleteView.as_view(), name="workflow_node_delete"
    ),
    path("workflows/<int:pk>/edges/add/", views.EdgeAddView.as_view(), name="workflow_edge_add"),
    path("workflows/<int:pk>/edges/delete/", views.EdgeDeleteView.as_view(), name="workflow_edge_delete"),
    path("workflows/<int:pk>/validate/", views.WorkflowValidateView.as_view(), name="workflow_validate"),
    path("workflows/<int:pk>/publish/", views.WorkflowPublishView.as_view(), name="workflow_publish"),
    path("workflows/<int:pk>/toggle/", views.WorkflowToggleActiveView.as_view(), name="workflow_toggle"),
    path("workflows/<int:pk>/duplicate/", views.WorkflowDuplicateView.as_view(), name="workflow_duplicate"),
    path("workflows/<int:pk>/export/", views.WorkflowExportView.as_view(), name="workflow_export"),
    path("workflows/<int:pk>/delete/", views.WorkflowDeleteView.as_view(), name="workflow_delete"),
    path("workflows/<int:pk>/versions/", views.VersionListView.as_view(), name="workflow_versions"),
    path("workflows/<int:pk>/run/", views.WorkflowRunView.as_view(), name="workflow_run"),
    path("workflows/<int:pk>/run/batch/", views.WorkflowBatchRunView.as_view(), name="workflow_run_batch"),
]
