from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from .credentials import credential_create, credential_test, credential_update, credential_validate
from .models import Credential


# -- Credentials (issue 4) ----------------------------------------------------------------------------
class CredentialAdminForm(forms.ModelForm):
    """The secret is write-only: the field starts empty, and leaving it blank keeps the stored one."""

    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave blank to keep the current secret.",
    )

    class Meta:
        model = Credential
        fields = ["workspace", "name", "kind", "provider", "base_url", "default_model", "extra", "is_active"]

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        try:
            credential_validate(
                workspace=data["workspace"],
                name=data.get("name", ""),
                kind=data.get("kind", ""),
                provider=data.get("provider", ""),
                base_url=data.get("base_url", ""),
                extra=data.get("extra") or {},
                secret=data.get("secret") or None,
                has_secret=bool(self.instance.pk and self.instance.secret_ciphertext),
                instance_pk=self.instance.pk,
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        return data


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):
    form = CredentialAdminForm
    list_display = [
        "name",
        "workspace",
        "kind",
        "provider",
        "secret_mask",
        "is_active",
        "last_test_ok",
        "last_tested_at",
    ]
    list_filter = ["kind", "provider", "is_active", "last_test_ok"]
    search_fields = ["name", "workspace__name"]
    readonly_fields = ["secret_mask", "key_id", "last_tested_at", "last_test_ok", "last_test_message", "created_by"]
    fieldsets = [
        (None, {"fields": ["workspace", "name", "kind", "provider", "is_active"]}),
        ("Secret", {"fields": ["secret", "secret_mask", "key_id"]}),
        ("Service", {"fields": ["base_url", "default_model", "extra"]}),
        ("Last test", {"fields": ["last_tested_at", "last_test_ok", "last_test_message"]}),
        ("History", {"fields": ["created_by"]}),
    ]
    actions = ["test_credentials"]

    def save_model(self, request: HttpRequest, obj: Credential, form: forms.ModelForm, change: bool) -> None:
        # Django admin permissions already gate this page; the services still validate and audit.
        data = form.cleaned_data
        fields = {key: data[key] for key in CredentialAdminForm.Meta.fields if key != "workspace"}
        if change:
            fresh = Credential.objects.get(pk=obj.pk)
            updated = credential_update(
                credential=fresh, user=request.user, secret=data.get("secret") or None, check_permission=False, **fields
            )
        else:
            updated = credential_create(
                workspace=data["workspace"],
                user=request.user,
                secret=data.get("secret") or "",
                check_permission=False,
                **fields,
            )
        obj.pk = updated.pk
        obj.refresh_from_db()

    def response_change(self, request: HttpRequest, obj: Credential) -> HttpResponse:
        if "_test" in request.POST:
            credential_test(credential=obj, user=request.user, check_permission=False)
            level = messages.SUCCESS if obj.last_test_ok else messages.ERROR
            self.message_user(request, f"Test of {obj.name}: {obj.last_test_message}", level)
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    @admin.action(description="Test the selected credentials")
    def test_credentials(self, request: HttpRequest, queryset: QuerySet[Credential]) -> None:
        for credential in queryset:
            credential_test(credential=credential, user=request.user, check_permission=False)
            level = messages.SUCCESS if credential.last_test_ok else messages.ERROR
            self.message_user(request, f"{credential.name}: {credential.last_test_message}", level)


# -- Collections and documents (issue 5) below --------------------------------------------------------


# -- Collections, documents and the token ledger (issue 5) ----------------------------------------------------
from .collections import (  # noqa: E402
    _validate_settings,
    collection_create,
    collection_delete,
    collection_update,
    document_add,
    document_delete,
    extract_text,
)
from .embeddings import DEFAULT_EMBEDDING_MODEL  # noqa: E402
from .models import Collection, ConversationMemory, Document, TokenUsage  # noqa: E402


def _form_errors(form: forms.ModelForm, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


class DocumentInline(admin.TabularInline):
    model = Document
    fields = ["title", "source", "metadata", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class CollectionAdminForm(forms.ModelForm):
    class Meta:
        model = Collection
        fields = ["workspace", "name", "description", "embedding_model", "chunk_size", "chunk_overlap"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["embedding_model"].initial = DEFAULT_EMBEDDING_MODEL
        if self.instance.pk:
            self.fields["workspace"].disabled = True

    def clean(self) -> dict:
        data = super().clean()
        if not self.errors:
            try:
                _validate_settings(
                    name=data.get("name", ""),
                    embedding_model=data.get("embedding_model") or DEFAULT_EMBEDDING_MODEL,
                    chunk_size=data.get("chunk_size") or 0,
                    chunk_overlap=data.get("chunk_overlap") or 0,
                )
            except ValidationError as exc:
                _form_errors(self, exc)
        return data


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    form = CollectionAdminForm
    list_display = ["name", "workspace", "embedding_model", "chunk_size", "chunk_overlap", "document_count"]
    list_filter = ["embedding_model"]
    search_fields = ["name", "workspace__name", "description"]
    readonly_fields = ["created_by", "created_at", "updated_at"]
    inlines = [DocumentInline]

    @admin.display(description="Documents")
    def document_count(self, obj: Collection) -> int:
        return obj.documents.count()

    def save_model(self, request: HttpRequest, obj: Collection, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        if change:
            fields = {k: data[k] for k in ("name", "description", "embedding_model", "chunk_size", "chunk_overlap")}
            fresh = Collection.objects.get(pk=obj.pk)
            saved = collection_update(collection=fresh, user=request.user, check_permission=False, **fields)
        else:
            saved = collection_create(
                workspace=data["workspace"],
                user=request.user,
                name=data["name"],
                description=data.get("description", ""),
                embedding_model=data.get("embedding_model") or DEFAULT_EMBEDDING_MODEL,
                chunk_size=data["chunk_size"],
                chunk_overlap=data["chunk_overlap"],
                check_permission=False,
            )
        obj.pk = saved.pk
        obj.__dict__.update({k: v for k, v in saved.__dict__.items() if not k.startswith("_")})

    def delete_model(self, request: HttpRequest, obj: Collection) -> None:
        collection_delete(collection=obj, user=request.user, check_permission=False)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for collection in queryset:
            collection_delete(collection=collection, user=request.user, check_permission=False)


class DocumentAdminForm(forms.ModelForm):
    """Add a document by pasting text or uploading a text, Markdown or PDF file."""

    upload = forms.FileField(required=False, help_text="A .txt, .md or .pdf file (instead of pasting text).")

    class Meta:
        model = Document
        fields = ["collection", "title", "source", "metadata", "text"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["text"].required = False

    def clean(self) -> dict:
        data = super().clean()
        upload = data.get("upload")
        if upload is not None:
            try:
                data["text"] = extract_text(
                    content=upload.read(), filename=upload.name, content_type=upload.content_type or ""
                )
            except ValidationError as exc:
                self.add_error("upload", exc.message_dict.get("file", exc.messages))
                return data
            data["title"] = data.get("title") or upload.name.rsplit(".", 1)[0]
            data["source"] = data.get("source") or upload.name
        if not self.instance.pk and not (data.get("text") or "").strip() and "upload" not in self.errors:
            raise ValidationError("Paste the text or upload a file.")
        return data


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    form = DocumentAdminForm
    list_display = ["__str__", "collection", "source", "chunk_count", "created_at"]
    list_filter = ["collection"]
    search_fields = ["title", "source", "text"]

    @admin.display(description="Chunks")
    def chunk_count(self, obj: Document) -> int:
        return obj.chunks.count()

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        # A document is immutable once chunked and embedded: delete it and add the new text instead.
        if obj is not None:
            return ["collection", "title", "source", "metadata", "text", "content_hash", "created_at"]
        return []

    def get_fields(self, request: HttpRequest, obj=None):
        if obj is not None:
            return self.get_readonly_fields(request, obj)
        return ["collection", "title", "source", "metadata", "text", "upload"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Document, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        saved = document_add(
            collection=data["collection"],
            user=request.user,
            text=data.get("text") or None,
            title=data.get("title", ""),
            source=data.get("source", ""),
            metadata=data.get("metadata") or {},
            check_permission=False,
        )
        obj.pk = saved.pk
        obj.__dict__.update({k: v for k, v in saved.__dict__.items() if not k.startswith("_")})

    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        document_delete(document=obj, user=request.user, check_permission=False)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for document in queryset:
            document_delete(document=document, user=request.user, check_permission=False)


@admin.register(TokenUsage)
class TokenUsageAdmin(admin.ModelAdmin):
    """The ledger is written by LLM calls only: read-only here."""

    list_display = [
        "created_at",
        "workspace",
        "user",
        "run",
        "node_id",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    ]
    list_filter = ["provider", "model"]
    search_fields = ["model", "node_id", "user__username"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(ConversationMemory)
class ConversationMemoryAdmin(admin.ModelAdmin):
    list_display = ["session", "workspace", "updated_at"]
    search_fields = ["session"]
    readonly_fields = ["workspace", "session", "messages", "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
