"""Forms for credentials and collections. A secret is write-only: never rendered back into a form."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from .choices import CredentialKind, Provider

TEXT_UPLOAD_TYPES = (".txt", ".md", ".markdown", ".csv", ".json", ".html", ".rst")


class CredentialForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(label="Kind", choices=CredentialKind.choices)
    provider = forms.ChoiceField(
        label="Provider", choices=[("", "—"), *Provider.choices], required=False, help_text="For LLM keys"
    )
    secret = forms.CharField(
        label="Secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="API key, token, password or database URL. Stored encrypted; only a mask is shown.",
    )
    base_url = forms.URLField(label="Base URL", max_length=500, required=False)
    default_model = forms.CharField(label="Default model", max_length=200, required=False)
    username = forms.CharField(label="Username", max_length=200, required=False, help_text="For HTTP basic auth")
    header_name = forms.CharField(label="Header name", max_length=200, required=False, help_text="For a custom header")

    def __init__(self, *args, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.editing = editing
        if editing:
            self.fields["secret"].help_text = "Leave empty to keep the current secret."

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if not self.editing and not cleaned.get("secret") and cleaned.get("provider") not in {"local", "ollama"}:
            self.add_error("secret", "Enter the secret.")
        if kind == CredentialKind.LLM and not cleaned.get("provider"):
            self.add_error("provider", "Choose the provider of this key.")
        if kind == CredentialKind.HTTP_BASIC and not cleaned.get("username"):
            self.add_error("username", "Basic auth needs a username.")
        if kind == CredentialKind.HTTP_HEADER and not cleaned.get("header_name"):
            self.add_error("header_name", "Name the header to send.")
        return cleaned

    def service_fields(self) -> dict[str, Any]:
        """Everything but the secret, shaped for ``credential_create`` / ``credential_update``."""
        data = self.cleaned_data
        extra = {}
        if data.get("username"):
            extra["username"] = data["username"]
        if data.get("header_name"):
            extra["header_name"] = data["header_name"]
        return {
            "name": data["name"],
            "kind": data["kind"],
            "provider": data.get("provider") or "",
            "base_url": data.get("base_url") or "",
            "default_model": data.get("default_model") or "",
            "extra": extra,
        }


class CollectionForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    chunk_size = forms.IntegerField(label="Chunk size (characters)", min_value=100, max_value=8000, initial=800)
    chunk_overlap = forms.IntegerField(label="Chunk overlap", min_value=0, max_value=2000, initial=100)

    def clean(self):
        cleaned = super().clean()
        size, overlap = cleaned.get("chunk_size"), cleaned.get("chunk_overlap")
        if size is not None and overlap is not None and overlap >= size:
            self.add_error("chunk_overlap", "The overlap must be smaller than the chunk size.")
        return cleaned


class DocumentForm(forms.Form):
    title = forms.CharField(max_length=300, required=False)
    file = forms.FileField(
        label="File", required=False, help_text="Text, Markdown or PDF", widget=forms.ClearableFileInput()
    )
    text = forms.CharField(label="Or paste text", widget=forms.Textarea(attrs={"rows": 5}), required=False)
    metadata = forms.CharField(
        label="Metadata (JSON)",
        required=False,
        widget=forms.TextInput(attrs={"class": "mono"}),
        help_text='e.g. {"topic": "billing"}',
    )

    def clean_metadata(self) -> dict[str, Any]:
        raw = self.cleaned_data.get("metadata") or ""
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"Not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ValidationError("Metadata must be a JSON object.")
        return value

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("file") and not (cleaned.get("text") or "").strip():
            raise ValidationError("Upload a file or paste some text.")
        return cleaned


class SearchForm(forms.Form):
    query = forms.CharField(label="Search query", max_length=1000)
    top_k = forms.IntegerField(label="Results", min_value=1, max_value=50, initial=5)
