"""Node-type registry. Each module in this package defines one node type and registers it::

@register
class TemplateNode(NodeType):
    name = "template"
    ...
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import ConfigError, NodeCancelled, NodeContext, NodeError, NodeResult, NodeType

_registry: dict[str, NodeType] = {}


def register(cls: type[NodeType]) -> type[NodeType]:
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a name")
    if cls.name in _registry and type(_registry[cls.name]) is not cls:
        raise ValueError(f"Node type {cls.name!r} is registered twice")
    _registry[cls.name] = cls()
    return cls


def get_node_type(name: str) -> NodeType | None:
    autodiscover()
    return _registry.get(name)


def all_node_types() -> dict[str, NodeType]:
    autodiscover()
    return dict(sorted(_registry.items()))


_discovered = False


def autodiscover() -> None:
    """Import every module in this package once so their ``@register`` decorators run."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


__all__ = [
    "ConfigError",
    "NodeCancelled",
    "NodeContext",
    "NodeError",
    "NodeResult",
    "NodeType",
    "all_node_types",
    "autodiscover",
    "get_node_type",
    "register",
]
