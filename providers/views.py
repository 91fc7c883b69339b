"""Pages for credentials and collections, calling the vault and collection services the API uses.

A secret never leaves the server: forms take it write-only and pages show ``secret_mask`` only.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View

from accounts.choices import Action
from accounts.permissions import can, require
from workflows.views import error_text

from . import collections as collection_services
from . import credentials as credential_services
from .choices import CredentialKind, Provider
from .forms import CollectionForm, CredentialForm, DocumentForm, SearchForm
from .models import Chunk, Collection, Credential, Document


def _form_errors_from(form, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, msgs in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, msgs)
    else:
        form.add_error(None, exc.messages)


# --- credentials ------------------------------------------------------------------------------
class CredentialListView(LoginRequiredMixin, View):
    """Provider cards: each kind/provider with the workspace's credentials for it."""

    def get(self, request):
        credentials = list(Credential.objects.for_user(request.user).select_related("workspace"))
        cards = []
        for provider, label in Provider.choices:
            cards.append(
                {
                    "key": provider,
                    "label": label,
                    "kind": CredentialKind.LLM,
                    "credentials": [c for c in credentials if c.kind == CredentialKind.LLM and c.provider == provider],
                }
            )
        for kind, label in CredentialKind.choices:
            if kind != CredentialKind.LLM:
                cards.append(
                    {
                        "key": kind,
                        "label": label,
                        "kind": kind,
                        "credentials": [c for c in credentials if c.kind == kind],
                    }
                )
        ctx = {
            "cards": cards,
            "credential_count": len(credentials),
            "can_edit": can(request.user, request.workspace, Action.EDIT),
        }
        return render(request, "providers/credentials.html", ctx)


class CredentialCreateView(LoginRequiredMixin, View):
    def get(self, request):
        initial = {k: request.GET[k] for k in ("kind", "provider") if request.GET.get(k)}
        return render(request, "providers/credential_form.html", {"form": CredentialForm(initial=initial)})

    def post(self, request):
        require(request.user, request.workspace, Action.EDIT)
        form = CredentialForm(request.POST)
        if form.is_valid():
            try:
                credential = credential_services.credential_create(
                    workspace=request.workspace,
                    user=request.user,
                    secret=form.cleaned_data["secret"],
                    **form.service_fields(),
                )
            except ValidationError as exc:
                _form_errors_from(form, exc)
            else:
                messages.success(request, f"Saved “{credential.name}” ({credential.secret_mask or 'no secret'}).")
                return redirect("credential_list")
        return render(request, "providers/credential_form.html", {"form": form}, status=400)


class CredentialMixin(LoginRequiredMixin):
    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.credential = get_object_or_404(Credential.objects.for_user(request.user), pk=kwargs["pk"])
        return super().dispatch(request, *args, **kwargs)


class CredentialEditView(CredentialMixin, View):
    def initial(self) -> dict:
        c = self.credential
        return {
            "name": c.name,
            "kind": c.kind,
            "provider": c.provider,
            "base_url": c.base_url,
            "default_model": c.default_model,
            "username": (c.extra or {}).get("username", ""),
            "header_name": (c.extra or {}).get("header_name", ""),
        }

    def get(self, request, pk: int):
        form = CredentialForm(initial=self.initial(), editing=True)
        return render(request, "providers/credential_form.html", {"form": form, "credential": self.credential})

    def post(self, request, pk: int):
        require(request.user, self.credential.workspace_id, Action.EDIT)
        form = CredentialForm(request.POST, initial=self.initial(), editing=True)
        if form.is_valid():
            fields = form.service_fields()
            if form.cleaned_data["secret"]:
                fields["secret"] = form.cleaned_data["secret"]
            try:
                credential_services.credential_update(credential=self.credential, user=request.user, **fields)
            except ValidationError as exc:
                _form_errors_from(form, exc)
            else:
                messages.success(request, f"Saved “{fields['name']}”.")
                return redirect("credential_list")
        ctx = {"form": form, "credential": self.credential}
        return render(request, "providers/credential_form.html", ctx, status=400)


class CredentialTestView(CredentialMixin, View):
    def post(self, request, pk: int):
        require(request.user, self.credential.workspace_id, Action.EDIT)
        try:
            credential_services.credential_test(credential=self.credential, user=request.user)
        except ValidationError as exc:
            messages.error(request, f"Test failed: {error_text(exc)}")
            return redirect("credential_list")
        self.credential.refresh_from_db()
        message = self.credential.last_test_message or ("OK" if self.credential.last_test_ok else "Failed")
        if self.credential.last_test_ok:
            messages.success(request, f"“{self.credential.name}” works: {message}")
        else:
            messages.error(request, f"“{self.credential.name}” failed its test: {message}")
        return redirect("credential_list")


class CredentialToggleView(CredentialMixin, View):
    def post(self, request, pk: int):
        require(request.user, self.credential.workspace_id, Action.EDIT)
        credential_services.credential_update(
            credential=self.credential, user=request.user, is_active=not self.credential.is_active
        )
        self.credential.refresh_from_db()
        state = "active" if self.credential.is_active else "inactive"
        messages.success(request, f"“{self.credential.name}” is now {state}.")
        return redirect("credential_list")


# --- collections ------------------------------------------------------------------------------
class CollectionListView(LoginRequiredMixin, View):
    def get(self, request, form=None, status=200):
        collections = (
            Collection.objects.for_user(request.user)
            .annotate(document_count=Count("documents", distinct=True), chunk_count=Count("chunks", distinct=True))
            .order_by("name")
        )
        ctx = {
            "collections": collections,
            "form": form or CollectionForm(),
            "can_edit": can(request.user, request.workspace, Action.EDIT),
        }
        return render(request, "providers/collections.html", ctx, status=status)

    def post(self, request):
        require(request.user, request.workspace, Action.EDIT)
        form = CollectionForm(request.POST)
        if form.is_valid():
            try:
                collection = collection_services.collection_create(
                    workspace=request.workspace, user=request.user, **form.cleaned_data
                )
            except ValidationError as exc:
                _form_errors_from(form, exc)
            else:
                messages.success(request, f"Created “{collection.name}”. Upload its first document.")
                return redirect("collection_detail", pk=collection.pk)
        return self.get(request, form=form, status=400)


class CollectionMixin(LoginRequiredMixin):
    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.collection = get_object_or_404(Collection.objects.for_user(request.user), pk=kwargs["pk"])
        return super().dispatch(request, *args, **kwargs)

    def page(self, request, status=200, **extra):
        documents = self.collection.documents.annotate(chunk_count=Count("chunks")).order_by("-id")
        ctx = {
            "collection": self.collection,
            "documents": documents,
            "document_form": DocumentForm(),
            "search_form": SearchForm(),
            "can_edit": can(request.user, self.collection.workspace_id, Action.EDIT),
        }
        ctx.update(extra)
        return render(request, "providers/collection_detail.html", ctx, status=status)


class CollectionDetailView(CollectionMixin, View):
    def get(self, request, pk: int):
        if "query" in request.GET:
            form = SearchForm(request.GET)
            results = None
            if form.is_valid():
                try:
                    results = collection_services.collection_search(
                        collection=self.collection,
                        query=form.cleaned_data["query"],
                        top_k=form.cleaned_data["top_k"],
                    )
                except ValidationError as exc:
                    form.add_error("query", exc.messages)
            return self.page(request, search_form=form, results=results)
        return self.page(request)


class DocumentUploadView(CollectionMixin, View):
    def post(self, request, pk: int):
        require(request.user, self.collection.workspace_id, Action.EDIT)
        form = DocumentForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            try:
                document = collection_services.document_add(
                    collection=self.collection,
                    user=request.user,
                    file=data.get("file"),
                    text=None if data.get("file") else data["text"],
                    title=data.get("title") or ("" if data.get("file") else "Pasted text"),
                    metadata=data["metadata"],
                )
            except ValidationError as exc:
                _form_errors_from(form, exc)
            else:
                messages.success(request, f"Added “{document}” ({document.chunks.count()} chunks).")
                return redirect("collection_detail", pk=pk)
        return self.page(request, status=400, document_form=form)


class DocumentDetailView(LoginRequiredMixin, View):
    def get(self, request, pk: int, doc_pk: int):
        document = get_object_or_404(
            Document.objects.for_user(request.user).select_related("collection"), pk=doc_pk, collection_id=pk
        )
        chunks = Chunk.objects.filter(document=document).order_by("index").only("index", "text", "metadata")
        return render(
            request,
            "providers/document.html",
            {"document": document, "collection": document.collection, "chunks": chunks},
        )
