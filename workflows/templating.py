"""Jinja2 templates in a sandbox: a template reads its context and nothing else.

``render_value`` walks dicts and lists. A string that is exactly one ``{{ expression }}`` keeps the
expression's native type (a list stays a list), so configs can pass structured data between nodes.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)


class TemplateRenderError(ValueError):
    """A template failed to render or evaluate; the message is safe to show to a user."""


class _Env(ImmutableSandboxedEnvironment):
    pass


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, default=str)


@lru_cache(maxsize=2)
def environment(strict: bool = False) -> _Env:
    env = _Env(undefined=StrictUndefined if strict else Undefined, autoescape=False)
    env.filters["tojson"] = _tojson
    env.filters["json"] = _tojson
    env.globals.clear()
    env.globals.update({"range": range, "dict": dict, "lipsum": None})
    env.globals.pop("lipsum")
    return env


@lru_cache(maxsize=1024)
def _compile(source: str, strict: bool):
    return environment(strict).from_string(source)


@lru_cache(maxsize=1024)
def _compile_expression(source: str, strict: bool):
    return environment(strict).compile_expression(source, undefined_to_none=not strict)


def render_text(source: str, context: dict[str, Any], *, strict: bool = False) -> str:
    try:
        return _compile(source, strict).render(context)
    except TemplateError as exc:
        raise TemplateRenderError(f"Template error: {exc}") from exc
    except Exception as exc:  # a filter or a sandbox refusal raising something else
        raise TemplateRenderError(f"Template error: {type(exc).__name__}: {exc}") from exc


def evaluate(expression: str, context: dict[str, Any], *, strict: bool = False) -> Any:
    """Evaluate a Jinja2 expression (``inputs.n > 3``) to a Python value."""
    try:
        value = _compile_expression(expression.strip(), strict)(**context)
    except TemplateError as exc:
        raise TemplateRenderError(f"Expression error in {expression!r}: {exc}") from exc
    except Exception as exc:
        raise TemplateRenderError(f"Expression error in {expression!r}: {type(exc).__name__}: {exc}") from exc
    if isinstance(value, Undefined):
        return None
    return value


def render_value(value: Any, context: dict[str, Any], *, strict: bool = False) -> Any:
    if isinstance(value, str):
        if "{" not in value:
            return value
        match = _SINGLE_EXPRESSION.match(value)
        if match and "{%" not in value:
            return evaluate(match.group("expr"), context, strict=strict)
        return render_text(value, context, strict=strict)
    if isinstance(value, dict):
        return {key: render_value(item, context, strict=strict) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, context, strict=strict) for item in value]
    return value


def check_syntax(source: str) -> str | None:
    """Return a readable syntax error for a template, or None."""
    try:
        environment(False).parse(source)
    except TemplateError as exc:
        return str(exc)
    return None
