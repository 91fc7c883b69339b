"""Forms behind the workflow admin: node rows checked like the graph validator checks them."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from accounts.models import Workspace

from .choices import OnError
from .graph import validate_definition
from .models import Edge, Node
from .nodes import all_node_types


def _type_choices(current: str | None = None) -> list[tuple[str, str]]:
    choices = [(name, f"{node_type.label} ({name})") for name, node_type in all_node_types().items()]
    if current and current not in dict(choices):
        choices.append((current, f"{current} (unknown type)"))
    return [("", "---------"), *choices]


class PrettyJSONField(forms.JSONField):
    """A JSON textarea that shows the value indented."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 6, "cols": 70, "class": "vLargeTextField"}))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


class NodeAdminForm(forms.ModelForm):
    """One node: its type among the registered ones, and config/retry/timeout checked as the validator does."""

    config = PrettyJSONField(required=False, initial=dict, help_text="JSON object; checked against the type's schema.")
    retry = PrettyJSONField(
        required=False,
        initial=dict,
        help_text='e.g. {"max_attempts": 3, "backoff": "exponential", "initial_delay": 0.5, "max_delay": 30}',
    )
    position = PrettyJSONField(required=False, initial=dict)

    class Meta:
        model = Node
        fields = ["node_id", "type", "name", "config", "retry", "timeout", "on_error", "position"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.type if self.instance and self.instance.pk else None
        self.fields["type"] = forms.ChoiceField(choices=_type_choices(current))
        self.fields["position"].widget.attrs["rows"] = 2

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors or not data.get("node_id") or not data.get("type"):
            return data
        node = {
            "id": data["node_id"],
            "type": data["type"],
            "name": data.get("name") or "",
            "config": {} if data.get("config") is None else data["config"],
            "retry": data.get("retry") or {},
            "position": data.get("position") or {},
            "timeout": data.get("timeout"),
            "on_error": data.get("on_error") or OnError.FAIL,
        }
        for error in validate_definition({"nodes": [node]}):
            if error.code not in {"malformed", "invalid_field", "unknown_type", "invalid_config"}:
                continue
            root = (error.field or "").split(".")[0].split("[")[0]
            field = {"id": "node_id"}.get(root, root)
            self.add_error(field if field in self.fields else None, error.message)
        return data


class NodeFormSet(forms.BaseInlineFormSet):
    """Node ids must be unique among the rows that stay."""

    def clean(self) -> None:
        super().clean()
        seen: set[str] = set()
        for form in self.forms:
            if not hasattr(form, "cleaned_data") or not form.cleaned_data or self._should_delete_form(form):
                continue
            node_id = form.cleaned_data.get("node_id")
            if node_id in seen:
                form.add_error("node_id", f"Node {node_id!r} is defined more than once.")
            seen.add(node_id)


class EdgeAdminForm(forms.ModelForm):
    class Meta:
        model = Edge
        fields = ["source", "target", "branch"]

    def __init__(self, *args: Any, workflow=None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        nodes = Node.objects.filter(workflow=workflow) if workflow is not None else Node.objects.none()
        self.fields["source"].queryset = nodes
        self.fields["target"].queryset = nodes

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("source") and data.get("source") == data.get("target"):
            self.add_error("target", "An edge cannot connect a node to itself.")
        return data


class EdgeFormSet(forms.BaseInlineFormSet):
    def get_form_kwargs(self, index: int) -> dict[str, Any]:
        return {**super().get_form_kwargs(index), "workflow": self.instance if self.instance.pk else None}

    @property
    def empty_form(self):  # the template row needs the same queryset
        form = self.form(
            auto_id=self.auto_id,
            prefix=self.add_prefix("__prefix__"),
            empty_permitted=True,
            use_required_attribute=False,
            workflow=self.instance if self.instance.pk else None,
            renderer=self.renderer,
        )
        self.add_fields(form, None)
        return form

    def clean(self) -> None:
        super().clean()
        seen: set[tuple[int, int, str]] = set()
        for form in self.forms:
            if not hasattr(form, "cleaned_data") or not form.cleaned_data or self._should_delete_form(form):
                continue
            source, target = form.cleaned_data.get("source"), form.cleaned_data.get("target")
            if source is None or target is None:
                continue
            key = (source.pk, target.pk, form.cleaned_data.get("branch") or "")
            if key in seen:
                form.add_error(None, "This edge appears more than once.")
            seen.add(key)


class ImportForm(forms.Form):
    """Upload or paste a graphwright/v1 document."""

    workspace = forms.ModelChoiceField(queryset=Workspace.objects.all())
    file = forms.FileField(required=False, help_text="A .json file exported from Graphwright.")
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 16, "cols": 90}), label="Or paste JSON")
    name = forms.CharField(required=False, max_length=200, help_text="Optional: overrides the document's name.")
    publish = forms.BooleanField(required=False, initial=True, help_text="Publish version 1 right away.")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        upload, text = data.get("file"), (data.get("text") or "").strip()
        if bool(upload) == bool(text):
            raise ValidationError("Upload a file or paste JSON (one of the two).")
        data["document"] = upload.read() if upload else text
        return data
