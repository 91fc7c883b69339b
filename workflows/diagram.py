"""Lays a graphwright/v1 definition out as an SVG diagram for the pages (no JavaScript needed).

Nodes are placed by layer (``workflows.graph.topological_layers``), top to bottom, so the diagram
stays narrow enough for a phone. A draft may be invalid (a cycle, a missing node): then a tolerant
layering is used so the editor can still draw it and point at the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import graph
from .nodes import get_node_type

NODE_WIDTH = 176
NODE_HEIGHT = 52
GAP_X = 28
GAP_Y = 56
MARGIN = 16

CATEGORY_COLOURS = {"control": "control", "io": "io", "ai": "ai"}


@dataclass
class DiagramNode:
    id: str
    type: str
    label: str
    icon: str
    category: str
    x: float
    y: float
    width: float = NODE_WIDTH
    height: float = NODE_HEIGHT
    errors: list[str] = field(default_factory=list)
    status: str = ""

    @property
    def cx(self) -> float:
        return self.x + self.width / 2


@dataclass
class DiagramEdge:
    source: str
    target: str
    branch: str
    path: str
    label_x: float
    label_y: float
    errors: list[str] = field(default_factory=list)


@dataclass
class Diagram:
    nodes: list[DiagramNode]
    edges: list[DiagramEdge]
    width: float
    height: float


def _tolerant_layers(node_ids: list[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    """Longest-path layering that ignores edges closing a cycle and edges to unknown nodes."""
    known = set(node_ids)
    parents: dict[str, list[str]] = {n: [] for n in node_ids}
    for source, target in edges:
        if source in known and target in known and source != target:
            parents[target].append(source)
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(node: str) -> int:
        if node in depth:
            return depth[node]
        if node in visiting:  # a back edge of a cycle: treat as no parent
            return -1
        visiting.add(node)
        level = max((visit(p) + 1 for p in parents[node]), default=0)
        visiting.discard(node)
        depth[node] = max(level, 0)
        return depth[node]

    for node in node_ids:
        visit(node)
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node in node_ids:
        layers[depth[node]].append(node)
    return layers


def layers_for(definition: dict[str, Any]) -> list[list[str]]:
    node_ids = [str(n.get("id", "")) for n in definition.get("nodes", [])]
    try:
        layers = graph.topological_layers(definition, strict=False)
    except Exception:  # a malformed draft still has to be drawn
        layers = None
    if layers and sorted(n for layer in layers for n in layer) == sorted(node_ids):
        return [list(layer) for layer in layers]
    edges = [(str(e.get("source", "")), str(e.get("target", ""))) for e in definition.get("edges", [])]
    return _tolerant_layers(node_ids, edges)


def build(
    definition: dict[str, Any],
    *,
    errors: list[graph.GraphError] | None = None,
    statuses: dict[str, str] | None = None,
) -> Diagram:
    """Place every node and route every edge; attach validation errors and run statuses to nodes."""
    nodes_by_id = {str(n.get("id", "")): n for n in definition.get("nodes", [])}
    layers = layers_for(definition)
    widest = max((len(layer) for layer in layers), default=0)
    width = max(widest * (NODE_WIDTH + GAP_X) - GAP_X, NODE_WIDTH) + 2 * MARGIN
    placed: dict[str, DiagramNode] = {}
    for row, layer in enumerate(layers):
        row_width = len(layer) * (NODE_WIDTH + GAP_X) - GAP_X
        left = (width - row_width) / 2
        for col, node_id in enumerate(layer):
            spec = nodes_by_id.get(node_id, {})
            node_type = get_node_type(str(spec.get("type", "")))
            placed[node_id] = DiagramNode(
                id=node_id,
                type=str(spec.get("type", "")),
                label=str(spec.get("name") or node_id),
                icon=getattr(node_type, "icon", "?") if node_type else "?",
                category=CATEGORY_COLOURS.get(getattr(node_type, "category", ""), "unknown"),
                x=left + col * (NODE_WIDTH + GAP_X),
                y=MARGIN + row * (NODE_HEIGHT + GAP_Y),
            )
    height = MARGIN * 2 + max(len(layers), 1) * (NODE_HEIGHT + GAP_Y) - GAP_Y

    edge_errors: dict[tuple[str, str, str], list[str]] = {}
    for error in errors or []:
        if error.node and error.node in placed:
            placed[error.node].errors.append(error.message)
        if error.edge:
            edge_errors.setdefault(tuple(error.edge), []).append(error.message)
    for node_id, status in (statuses or {}).items():
        if node_id in placed:
            placed[node_id].status = status

    drawn: list[DiagramEdge] = []
    for edge in definition.get("edges", []):
        source, target = placed.get(str(edge.get("source"))), placed.get(str(edge.get("target")))
        if source is None or target is None:
            continue
        branch = str(edge.get("branch") or "")
        x1, y1 = source.cx, source.y + source.height
        x2, y2 = target.cx, target.y
        if y2 <= y1:  # an edge going back up (a cycle): loop around the right side
            side = max(source.x, target.x) + NODE_WIDTH + GAP_X / 2
            path = f"M{x1:.0f},{y1:.0f} C{side:.0f},{y1 + 40:.0f} {side:.0f},{y2 - 40:.0f} {x2:.0f},{y2:.0f}"
            lx, ly = side - 6, (y1 + y2) / 2
        else:
            mid = (y1 + y2) / 2
            path = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{mid:.0f} {x2:.0f},{mid:.0f} {x2:.0f},{y2:.0f}"
            lx, ly = (x1 + x2) / 2, mid
        key = (source.id, target.id, branch)
        drawn.append(DiagramEdge(source.id, target.id, branch, path, lx, ly, edge_errors.get(key, [])))
    return Diagram(nodes=list(placed.values()), edges=drawn, width=width, height=height)
