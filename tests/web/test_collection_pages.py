"""The collections page: create, upload (file and pasted text), chunks, and a real vector search."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from providers.collections import collection_create
from providers.models import Collection, Document

pytestmark = pytest.mark.django_db


@pytest.fixture
def collection(workspace, user):
    return collection_create(workspace=workspace, user=user, name="Handbook", chunk_size=200, chunk_overlap=20)


def test_empty_state_and_create(client_in, workspace):
    assert "No collections yet" in client_in.get(reverse("collection_list")).content.decode()
    response = client_in.post(reverse("collection_list"), {"name": "Docs", "chunk_size": 500, "chunk_overlap": 50})
    created = Collection.objects.get(name="Docs")
    assert created.workspace == workspace
    assert response["Location"] == reverse("collection_detail", args=[created.pk])
    response = client_in.post(reverse("collection_list"), {"name": "Bad", "chunk_size": 200, "chunk_overlap": 300})
    assert response.status_code == 400 and "smaller than the chunk size" in response.content.decode()


def test_upload_see_chunks_and_search(client_in, collection):
    upload = reverse("collection_upload", args=[collection.pk])
    refunds = SimpleUploadedFile(
        "refunds.md",
        b"# Refunds\n\nCustomers may return any item within thirty days for a full refund.",
        "text/markdown",
    )
    assert client_in.post(upload, {"file": refunds, "metadata": '{"topic": "billing"}'}).status_code == 302
    client_in.post(upload, {"title": "Shipping", "text": "Parcels ship from Rotterdam by boat, which takes two weeks."})
    assert collection.documents.count() == 2

    document = Document.objects.get(title="refunds")
    assert document.metadata == {"topic": "billing"}
    body = client_in.get(reverse("document_detail", args=[collection.pk, document.pk])).content.decode()
    assert "thirty days" in body and "#0" in body

    body = client_in.get(
        reverse("collection_detail", args=[collection.pk]), {"query": "how do I get my money back", "top_k": 2}
    ).content.decode()
    assert body.index("thirty days") < body.index("Rotterdam")  # the relevant chunk ranks first

    response = client_in.post(upload, {"title": "nothing"})
    assert response.status_code == 400 and "Upload a file or paste some text" in response.content.decode()


def test_other_users_collection_is_404(other_client, collection):
    assert "Handbook" not in other_client.get(reverse("collection_list")).content.decode()
    assert other_client.get(reverse("collection_detail", args=[collection.pk])).status_code == 404
    assert other_client.post(reverse("collection_upload", args=[collection.pk]), {"text": "x"}).status_code == 404
