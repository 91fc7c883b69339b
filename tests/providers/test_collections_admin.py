"""The Collection and Document admin pages save through the services (chunked, embedded, audited)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.models import AuditLog
from providers.collections import collection_search
from providers.models import Chunk, Collection, Document, TokenUsage


@pytest.fixture
def admin_client(client, user):
    user.is_staff = user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_add_collection_upload_document_search_and_delete(admin_client, workspace, embedder):
    response = admin_client.post(
        reverse("admin:providers_collection_add"),
        {
            "workspace": workspace.pk,
            "name": "Handbook",
            "description": "",
            "embedding_model": "all-MiniLM-L6-v2",
            "chunk_size": 400,
            "chunk_overlap": 50,
            "documents-TOTAL_FORMS": 0,
            "documents-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.content[:2000]
    collection = Collection.objects.get(name="Handbook")
    assert AuditLog.objects.filter(action="collection.created").exists()

    upload = SimpleUploadedFile("leave.md", b"# Leave\n\nEmployees get twenty days of paid leave.", "text/markdown")
    response = admin_client.post(
        reverse("admin:providers_document_add"),
        {"collection": collection.pk, "title": "", "source": "", "metadata": "{}", "text": "", "upload": upload},
    )
    assert response.status_code == 302, response.content[:2000]
    document = Document.objects.get(collection=collection)
    assert document.title == "leave" and document.source == "leave.md"
    assert Chunk.objects.filter(document=document).exists()
    assert collection_search(collection=collection, query="paid leave days")[0]["document_id"] == document.pk

    response = admin_client.post(reverse("admin:providers_document_delete", args=[document.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Document.objects.filter(pk=document.pk).exists()
    assert AuditLog.objects.filter(action="document.deleted").exists()


@pytest.mark.django_db
def test_bad_input_is_shown_on_the_form(admin_client, workspace):
    response = admin_client.post(
        reverse("admin:providers_collection_add"),
        {
            "workspace": workspace.pk,
            "name": "Bad",
            "embedding_model": "all-MiniLM-L6-v2",
            "chunk_size": 100,
            "chunk_overlap": 100,
            "documents-TOTAL_FORMS": 0,
            "documents-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 200
    assert "smaller than the chunk size" in response.content.decode()
    assert not Collection.objects.filter(name="Bad").exists()


@pytest.mark.django_db
def test_ledger_pages_render(admin_client):
    assert admin_client.get(reverse("admin:providers_tokenusage_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:providers_collection_changelist")).status_code == 200
    assert TokenUsage.objects.count() == 0
