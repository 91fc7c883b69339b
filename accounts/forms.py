"""Forms for the account pages."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm

from .choices import Role
from .models import User


class SignUpForm(UserCreationForm):
    email = forms.EmailField(required=False, help_text="Optional; lets others invite you by email.")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. “CI pipeline”.")


class WorkspaceForm(forms.Form):
    name = forms.CharField(max_length=100)


class MemberInviteForm(forms.Form):
    user = forms.CharField(max_length=254, label="Username or email")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.EDITOR)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)
