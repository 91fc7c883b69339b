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
