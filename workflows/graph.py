"""Graph validation and ordering: pure functions over a graphwright/v1 definition.

CONTRACT (issue 2 implements):
- ``validate_definition(definition) -> list[GraphError]`` returns every error, each naming its node/edge.
- ``topological_layers(definition) -> list[list[str]]`` for the engine and the diagram.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GraphError:
    code: str  # unknown_type, duplicate_node, missing_node, self_loop, cycle, no_start, unreachable, ...
    message: str
    node: str | None = None
    edge: tuple[str, str, str] | None = None  # (source, target, branch)
    field: str | None = None  # e.g. "config.url"

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "node": self.node,
            "edge": list(self.edge) if self.edge else None,
            "field": self.field,
        }


def validate_definition(definition: dict[str, Any]) -> list[GraphError]:
    raise NotImplementedError


def topological_layers(definition: dict[str, Any]) -> list[list[str]]:
    raise NotImplementedError
