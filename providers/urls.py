from django.urls import path

from . import views

urlpatterns = [
    path("credentials/", views.CredentialListView.as_view(), name="credential_list"),
    path("credentials/new/", views.CredentialCreateView.as_view(), name="credential_create"),
    path("credentials/<int:pk>/", views.CredentialEditView.as_view(), name="credential_edit"),
    path("credentials/<int:pk>/test/", views.CredentialTestView.as_view(), name="credential_test"),
    path("credentials/<int:pk>/toggle/", views.CredentialToggleView.as_view(), name="credential_toggle"),
    path("collections/", views.CollectionListView.as_view(), name="collection_list"),
    path("collections/<int:pk>/", views.CollectionDetailView.as_view(), name="collection_detail"),
    path("collections/<int:pk>/upload/", views.DocumentUploadView.as_view(), name="collection_upload"),
    path("collections/<int:pk>/documents/<int:doc_pk>/", views.DocumentDetailView.as_view(), name="document_detail"),
]
