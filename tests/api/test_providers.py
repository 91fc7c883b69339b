"""Credentials (write-only secrets, masked reads, test) and collections (documents, uploads, search)."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.choices import Role
from accounts.models import AuditLog
from providers.credentials import credential_secret
from providers.models import Collection, Credential, Document

from .conftest import assert_error

pytestmark = pytest.mark.django_db

SECRET = "sk-test-0123456789abcdef"


def make_credential(client, **extra):
    body = {"name": "Service", "kind": "http_bearer", "secret": SECRET, **extra}
    return client.post("/api/v1/credentials/", body, format="json")


def test_secret_is_write_only_and_masked(api_client, workspace):
    response = make_credential(api_client)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert "secret" not in body and SECRET not in str(body)
    assert body["secret_mask"] and body["secret_mask"] != SECRET and body["workspace"] == workspace.pk
    credential = Credential.objects.get(pk=body["id"])
    assert SECRET not in credential.secret_ciphertext and credential_secret(credential) == SECRET
    listed = api_client.get("/api/v1/credentials/")
    assert SECRET not in listed.content.decode() and listed.json()["count"] == 1
    # Changing the name keeps the secret; a new secret replaces it.
    assert api_client.patch(f"/api/v1/credentials/{body['id']}/", {"name": "Renamed"}, format="json").status_code == 200
    credential.refresh_from_db()
    assert credential.name == "Renamed" and credential_secret(credential) == SECRET
    api_client.patch(f"/api/v1/credentials/{body['id']}/", {"secret": "sk-new-secret-value-9999"}, format="json")
    credential.refresh_from_db()
    assert credential_secret(credential) == "sk-new-secret-value-9999"
    actions = set(AuditLog.objects.filter(target_id=str(credential.pk)).values_list("action", flat=True))
    assert {"credential.created", "credential.changed"} <= actions
    for entry in AuditLog.objects.all():
        assert SECRET not in str(entry.data) and "sk-new-secret" not in str(entry.data)
    assert api_client.delete(f"/api/v1/credentials/{body['id']}/").status_code == 204
    assert not Credential.objects.filter(pk=body["id"]).exists()


def test_credential_validation_errors(api_client):
    error = assert_error(make_credential(api_client, secret=""), 400)
    assert "secret" in error["fields"]
    error = assert_error(make_credential(api_client, kind="http_basic"), 400)
    assert "extra" in error["fields"]
    assert make_credential(api_client).status_code == 201
    error = assert_error(make_credential(api_client), 400)
    assert "name" in error["fields"]


def test_credential_test_against_a_loopback_server(api_client, loopback):
    body = make_credential(api_client, base_url=loopback.url + "/ping").json()
    response = api_client.post(f"/api/v1/credentials/{body['id']}/test/")
    assert response.status_code == 200, response.json()
    assert response.json()["ok"] is True and response.json()["tested_at"]
    assert loopback.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in response.content.decode()
    loopback.statuses.append(401)
    response = api_client.post(f"/api/v1/credentials/{body['id']}/test/")
    assert response.json()["ok"] is False and "401" in response.json()["message"]


def test_credentials_of_another_user_are_404(api_client, other_api_client, member_client):
    body = make_credential(api_client).json()
    url = f"/api/v1/credentials/{body['id']}/"
    for method, path in [("get", url), ("patch", url), ("delete", url), ("post", url + "test/")]:
        assert_error(getattr(other_api_client, method)(path, {}, format="json"), 404)
    assert other_api_client.get("/api/v1/credentials/").json()["count"] == 0
    _runner, runner = member_client(Role.RUNNER)
    assert runner.get(url).status_code == 200
    assert_error(runner.patch(url, {"name": "x"}, format="json"), 403)
    assert_error(runner.post(url + "test/"), 403)


def _pdf_with_text(text: str) -> bytes:
    """A minimal one-page PDF whose content stream draws ``text``."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def test_collections_documents_and_search(api_client, workspace):
    response = api_client.post("/api/v1/collections/", {"name": "Handbook", "chunk_size": 200, "chunk_overlap": 20})
    assert response.status_code == 201, response.json()
    collection = response.json()
    base = f"/api/v1/collections/{collection['id']}"
    assert collection["workspace"] == workspace.pk and collection["document_count"] == 0
    text_doc = api_client.post(
        f"{base}/documents/",
        {
            "title": "Cats",
            "text": "Cats are small furry animals that purr and chase mice.",
            "metadata": {"topic": "pets"},
        },
        format="json",
    )
    assert text_doc.status_code == 201, text_doc.json()
    assert text_doc.json()["chunk_count"] >= 1
    markdown = SimpleUploadedFile("rockets.md", b"# Rockets\n\nRockets burn fuel to reach orbit around the Earth.")
    md_doc = api_client.post(f"{base}/documents/", {"file": markdown}, format="multipart")
    assert md_doc.status_code == 201, md_doc.json()
    assert md_doc.json()["source"] == "rockets.md"
    pdf = SimpleUploadedFile("volcano.pdf", _pdf_with_text("Volcanoes erupt molten lava"), "application/pdf")
    pdf_doc = api_client.post(f"{base}/documents/", {"file": pdf}, format="multipart")
    assert pdf_doc.status_code == 201, pdf_doc.json()
    assert "lava" in Document.objects.get(pk=pdf_doc.json()["id"]).text
    bad = SimpleUploadedFile("image.png", b"\x89PNG\r\n", "image/png")
    assert (
        "file" in assert_error(api_client.post(f"{base}/documents/", {"file": bad}, format="multipart"), 400)["fields"]
    )
    assert_error(api_client.post(f"{base}/documents/", {}, format="json"), 400)

    listed = api_client.get(f"{base}/documents/").json()
    assert listed["count"] == 3
    assert api_client.get(f"{base}/").json()["document_count"] == 3
    hits = api_client.post(f"{base}/search/", {"query": "spacecraft going to orbit", "top_k": 2}, format="json")
    assert hits.status_code == 200, hits.json()
    assert hits.json()[0]["document_id"] == md_doc.json()["id"]
    assert len(hits.json()) == 2
    filtered = api_client.post(f"{base}/search/", {"query": "animals", "filters": {"topic": "pets"}}, format="json")
    assert [hit["document_id"] for hit in filtered.json()] == [text_doc.json()["id"]]
    assert_error(api_client.post(f"{base}/search/", {"query": ""}, format="json"), 400)

    assert api_client.delete(f"{base}/documents/{text_doc.json()['id']}/").status_code == 204
    assert api_client.get(f"{base}/documents/").json()["count"] == 2
    assert api_client.patch(f"{base}/", {"description": "Notes"}, format="json").json()["description"] == "Notes"
    assert api_client.delete(f"{base}/").status_code == 204
    assert not Collection.objects.filter(pk=collection["id"]).exists()


def test_collections_of_another_user_are_404(api_client, other_api_client, member_client):
    collection = api_client.post("/api/v1/collections/", {"name": "Private"}, format="json").json()
    document = api_client.post(
        f"/api/v1/collections/{collection['id']}/documents/", {"text": "private words"}, format="json"
    ).json()
    base = f"/api/v1/collections/{collection['id']}"
    for method, path in [
        ("get", f"{base}/"),
        ("patch", f"{base}/"),
        ("delete", f"{base}/"),
        ("get", f"{base}/documents/"),
        ("post", f"{base}/documents/"),
        ("get", f"{base}/documents/{document['id']}/"),
        ("delete", f"{base}/documents/{document['id']}/"),
        ("post", f"{base}/search/"),
    ]:
        assert_error(getattr(other_api_client, method)(path, {"query": "x", "text": "y"}, format="json"), 404)
    assert other_api_client.get("/api/v1/collections/").json()["count"] == 0
    _viewer, viewer = member_client(Role.VIEWER)
    assert viewer.post(f"{base}/search/", {"query": "words"}, format="json").status_code == 200
    assert_error(viewer.post(f"{base}/documents/", {"text": "more"}, format="json"), 403)
    assert_error(viewer.delete(f"{base}/"), 403)


def test_duplicate_collection_name_is_a_clear_field_error(api_client):
    assert api_client.post("/api/v1/collections/", {"name": "Notes"}, format="json").status_code == 201
    duplicate = api_client.post("/api/v1/collections/", {"name": "Notes"}, format="json")
    assert duplicate.status_code == 400
    assert duplicate.json()["error"]["fields"]["name"] == [
        "A collection named 'Notes' already exists in this workspace."
    ]
