"""Forms for the workflow pages. Node config forms and run forms are built from declarations:
a node type's JSON ``config_schema`` and a workflow's ``inputs``."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.text import slugify

from .choices import Backoff, OnError
from .nodes import NodeType, all_node_types

# Config keys whose strings are long enough to deserve a textarea.
_LONG_TEXT_KEYS = {"prompt", "system", "system_prompt", "template", "body", "query", "sql", "expression", "text"}


def _type_choices() -> list[tuple[str, str]]:
    return [(name, f"{t.icon} {t.label}") for name, t in all_node_types().items()]


class WorkflowForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    tags = forms.CharField(required=False, help_text="Comma-separated, e.g. demo, rag")

    def clean_tags(self) -> list[str]:
        return [t.strip() for t in self.cleaned_data["tags"].split(",") if t.strip()]


class ImportForm(forms.Form):
    file = forms.FileField(label="Workflow JSON file", help_text="A graphwright/v1 document (.json)")

    def clean_file(self) -> dict[str, Any]:
        upload = self.cleaned_data["file"]
        try:
            document = json.loads(upload.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValidationError(f"This file is not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise ValidationError("The document must be a JSON object.")
        return document


class NodeAddForm(forms.Form):
    type = forms.ChoiceField(label="Node type")
    node_id = forms.SlugField(label="Node id", max_length=64, help_text="Letters, digits, - and _; templates use it.")

    def __init__(self, *args, existing_ids: set[str] = frozenset(), **kwargs):
        super().__init__(*args, **kwargs)
        self.existing_ids = existing_ids
        self.fields["type"].choices = _type_choices()

    def clean_node_id(self) -> str:
        node_id = self.cleaned_data["node_id"]
        if node_id in self.existing_ids:
            raise ValidationError(f"A node with id {node_id!r} already exists.")
        return node_id


class EdgeForm(forms.Form):
    source = forms.ChoiceField(label="From")
    target = forms.ChoiceField(label="To")
    branch = forms.CharField(label="Branch", max_length=64, required=False, help_text="Only for branching nodes")

    def __init__(self, *args, node_ids: list[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(n, n) for n in node_ids]
        self.fields["source"].choices = choices
        self.fields["target"].choices = choices

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("source") and cleaned.get("source") == cleaned.get("target"):
            raise ValidationError("A node cannot connect to itself.")
        return cleaned


class PublishForm(forms.Form):
    note = forms.CharField(label="Version note", max_length=500, required=False)


class NodeForm(forms.Form):
    """Edits one node: its name and engine policy, plus one field per property of the config schema.

    Config fields are prefixed ``cfg_``. Properties the form cannot map to a simple widget
    (objects, arrays, unions) are edited as JSON. ``clean`` runs the node type's own
    ``validate_config`` and pins each error on the field it names.
    """

    name = forms.CharField(label="Display name", max_length=200, required=False)
    on_error = forms.ChoiceField(label="On error", choices=OnError.choices, initial=OnError.FAIL)
    max_attempts = forms.IntegerField(label="Max attempts", min_value=1, max_value=20, required=False)
    backoff = forms.ChoiceField(label="Backoff", choices=[("", "—"), *Backoff.choices], required=False)
    initial_delay = forms.FloatField(label="Initial retry delay (s)", min_value=0, required=False)
    timeout = forms.FloatField(label="Timeout (s)", min_value=0, required=False)

    PREFIX = "cfg_"

    def __init__(self, *args, node_type: NodeType, node: dict[str, Any] | None = None, **kwargs):
        node = node or {}
        retry = node.get("retry") or {}
        initial = {
            "name": node.get("name", ""),
            "on_error": node.get("on_error") or OnError.FAIL,
            "max_attempts": retry.get("max_attempts"),
            "backoff": retry.get("backoff", ""),
            "initial_delay": retry.get("initial_delay"),
            "timeout": node.get("timeout"),
        }
        config = node.get("config") or {}
        self.node_type = node_type
        self.schema = node_type.config_schema or {}
        self.properties: dict[str, dict[str, Any]] = self.schema.get("properties") or {}
        required = set(self.schema.get("required") or [])
        self.json_keys: set[str] = set()
        self.flex_keys: set[str] = set()  # text, or JSON when it parses as an object or a list
        self.extra_config = {k: v for k, v in config.items() if k not in self.properties}
        super().__init__(*args, initial=initial, **kwargs)
        self.config_field_names: list[str] = []
        for key, prop in self.properties.items():
            field, is_json = self._field_for(key, prop, key in required)
            name = self.PREFIX + key
            self.fields[name] = field
            self.config_field_names.append(name)
            kinds = prop.get("type")
            if is_json and isinstance(kinds, list) and "string" in kinds:
                self.flex_keys.add(key)
                field.widget = forms.Textarea(attrs={"rows": 4})
                field.help_text = (prop.get("description", "") + " Text, or a JSON object or list.").strip()
            elif is_json:
                self.json_keys.add(key)
            value = config.get(key, prop.get("default"))
            if value is not None:
                if key in self.flex_keys and isinstance(value, str):
                    self.initial[name] = value
                else:
                    self.initial[name] = json.dumps(value, indent=2) if is_json else value
        if not self.properties:  # a schema without properties: edit the whole config as JSON
            self.fields["cfg__json"] = forms.CharField(
                label="Config (JSON)", widget=forms.Textarea(attrs={"rows": 6}), required=False
            )
            self.initial["cfg__json"] = json.dumps(config, indent=2)

    @staticmethod
    def _field_for(key: str, prop: dict[str, Any], required: bool) -> tuple[forms.Field, bool]:
        label = prop.get("title") or key.replace("_", " ").capitalize()
        help_text = prop.get("description", "")
        kind = prop.get("type")
        common = {"label": label, "help_text": help_text, "required": required}
        if "enum" in prop:
            choices = [(v, str(v)) for v in prop["enum"]]
            if not required:
                choices = [("", "—"), *choices]
            return forms.TypedChoiceField(
                choices=choices, coerce=lambda v, e=prop["enum"]: _match_enum(v, e), **common
            ), False
        if kind == "string":
            long = (
                key in _LONG_TEXT_KEYS
                or prop.get("format") in {"template", "textarea"}
                or prop.get("maxLength", 0) > 300
            )
            widget = forms.Textarea(attrs={"rows": 4}) if long else forms.TextInput()
            return forms.CharField(widget=widget, strip=False, **common), False
        if kind == "integer":
            return forms.IntegerField(min_value=prop.get("minimum"), max_value=prop.get("maximum"), **common), False
        if kind == "number":
            return forms.FloatField(min_value=prop.get("minimum"), max_value=prop.get("maximum"), **common), False
        if kind == "boolean":
            return forms.BooleanField(label=label, help_text=help_text, required=False), False
        return forms.CharField(
            widget=forms.Textarea(attrs={"rows": 4, "class": "mono"}),
            help_text=(help_text + " (JSON)").strip(),
            label=label,
            required=required,
        ), True

    def config_fields(self):
        return [self[name] for name in self.fields if name.startswith(self.PREFIX)]

    def policy_fields(self):
        return [self[name] for name in self.fields if not name.startswith(self.PREFIX)]

    def clean(self):
        cleaned = super().clean()
        config: dict[str, Any] = dict(self.extra_config)
        if "cfg__json" in self.fields:
            raw = cleaned.get("cfg__json") or "{}"
            try:
                config = json.loads(raw)
            except json.JSONDecodeError as exc:
                self.add_error("cfg__json", f"Not valid JSON: {exc}")
                return cleaned
        for key, prop in self.properties.items():
            name = self.PREFIX + key
            if name not in cleaned:
                continue
            value = cleaned[name]
            if key in self.flex_keys and isinstance(value, str):
                # A JSON object or list is taken as structured config; anything else is template text.
                with contextlib.suppress(json.JSONDecodeError):
                    parsed = json.loads(value)
                    if isinstance(parsed, dict | list):
                        value = parsed
            elif key in self.json_keys:
                if value in ("", None):
                    continue
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    self.add_error(name, f"Not valid JSON: {exc}")
                    continue
            if value in ("", None) and prop.get("type") != "string":
                continue
            if value == "" and key not in (self.schema.get("required") or []):
                continue
            config[key] = value
        if self.errors:
            return cleaned
        for error in self.node_type.validate_config(config):
            parts = error.path.split(".")
            field_name = self.PREFIX + parts[1] if len(parts) > 1 and parts[0] == "config" else None
            if field_name in self.fields:
                self.add_error(field_name, error.message)
            elif "cfg__json" in self.fields:
                self.add_error("cfg__json", str(error))
            else:
                self.add_error(None, str(error))
        cleaned["config"] = config
        return cleaned

    def node_document(self, base: dict[str, Any]) -> dict[str, Any]:
        """``base`` (the node's current definition) updated with the cleaned values."""
        data = self.cleaned_data
        retry: dict[str, Any] = {}
        if data.get("max_attempts"):
            retry["max_attempts"] = data["max_attempts"]
        if data.get("backoff"):
            retry["backoff"] = data["backoff"]
        if data.get("initial_delay") is not None:
            retry["initial_delay"] = data["initial_delay"]
        node = dict(base)
        node.update(
            config=data["config"],
            name=data.get("name") or "",
            on_error=data.get("on_error") or OnError.FAIL,
            retry={**(base.get("retry") or {}), **retry} if retry else {},
            timeout=data.get("timeout"),
        )
        return node

    def add_service_errors(self, messages_by_key: dict[str, list[str]]) -> None:
        """Pin a service ValidationError (keys like ``nodes.<id>.config.url``) on the matching fields."""
        for key, msgs in messages_by_key.items():
            parts = key.split(".")
            field = None
            if "config" in parts and parts.index("config") + 1 < len(parts):
                field = self.PREFIX + parts[parts.index("config") + 1]
            elif parts[-1] in {"name", "timeout", "on_error"}:
                field = parts[-1]
            elif parts[-1] == "retry" or "retry" in parts:
                field = "max_attempts"
            self.add_error(field if field in self.fields else None, msgs)


def _match_enum(value: str, options: list[Any]) -> Any:
    """Choice fields post strings; give back the enum's own value (an int stays an int)."""
    for option in options:
        if str(option) == value:
            return option
    return value


class BatchRunForm(forms.Form):
    """Many runs at once: a JSON array of input objects, or JSON Lines (one object per line),
    typed in or uploaded as a file."""

    items = forms.CharField(
        label="Inputs",
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 8, "class": "mono", "placeholder": '[{"text": "first"}, {"text": "second"}]'}
        ),
        help_text="A JSON array of input objects, or one JSON object per line. Each object starts one run.",
    )
    file = forms.FileField(
        label="…or a file", required=False, help_text=".json (an array) or .jsonl (one object per line)"
    )

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("file")
        if upload is not None:
            try:
                text = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                raise forms.ValidationError({"file": "The file is not UTF-8 text."}) from None
            field = "file"
        else:
            text, field = cleaned.get("items") or "", "items"
        if not text.strip():
            raise forms.ValidationError({"items": "Give at least one input object."})
        cleaned["inputs"] = self._parse(text, field)
        return cleaned

    def _parse(self, text: str, field: str) -> list[Any]:
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                items = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise forms.ValidationError({field: f"Not a valid JSON array: {exc}"}) from None
            return items
        items = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise forms.ValidationError({field: f"Line {number} is not valid JSON: {exc}"}) from None
        return items


class RunForm(forms.Form):
    """One field per declared workflow input: ``{"name": {"type", "required", "default", "description"}}``."""

    def __init__(self, *args, declarations: dict[str, Any], **kwargs):
        super().__init__(*args, **kwargs)
        self.json_keys: set[str] = set()
        for key, decl in (declarations or {}).items():
            decl = decl if isinstance(decl, dict) else {"type": str(decl)}
            kind = decl.get("type", "string")
            common = {
                "label": decl.get("title") or key.replace("_", " ").capitalize(),
                "help_text": decl.get("description", ""),
                "required": bool(decl.get("required", False)),
                "initial": decl.get("default"),
            }
            if "enum" in decl:
                field = forms.ChoiceField(choices=[(v, v) for v in decl["enum"]], **common)
            elif kind == "integer":
                field = forms.IntegerField(**common)
            elif kind == "number":
                field = forms.FloatField(**common)
            elif kind == "boolean":
                common["required"] = False
                field = forms.BooleanField(**common)
            elif kind in {"object", "array"}:
                if common["initial"] is not None:
                    common["initial"] = json.dumps(common["initial"])
                field = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "class": "mono"}), **common)
                self.json_keys.add(key)
            elif kind == "file":
                field = forms.FileField(**common)
            else:
                long = decl.get("multiline") or key in _LONG_TEXT_KEYS
                field = forms.CharField(
                    widget=forms.Textarea(attrs={"rows": 3}) if long else forms.TextInput(), **common
                )
            self.fields[key] = field

    def clean(self):
        cleaned = super().clean()
        for key in self.json_keys:
            raw = cleaned.get(key)
            if raw in (None, ""):
                cleaned.pop(key, None)
                continue
            try:
                cleaned[key] = json.loads(raw)
            except json.JSONDecodeError as exc:
                self.add_error(key, f"Not valid JSON: {exc}")
        return cleaned

    def inputs(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, value in self.cleaned_data.items():
            if value is None or value == "":
                continue
            if hasattr(value, "read"):  # an uploaded file: its text
                value = value.read().decode("utf-8", errors="replace")
            values[key] = value
        return values


def unique_node_id(base: str, existing: set[str]) -> str:
    base = slugify(base).replace("-", "_") or "node"
    candidate, n = base, 1
    while candidate in existing:
        n += 1
        candidate = f"{base}_{n}"
    return candidate
