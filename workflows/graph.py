"""Graph validation and ordering: pure functions over a graphwright/v1 definition.

- ``validate_definition(definition) -> list[GraphError]`` returns every error, each naming its node/edge.
- ``topological_layers(definition) -> list[list[str]]`` for the engine and the diagram.
- ``adjacency(definition)`` gives each node's parents and children (with the edge's branch).

Nothing here touches the database: the same checks serve the admin, the API, import and the engine.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from .choices import DEFINITION_FORMAT, ERROR_BRANCH, Backoff, OnError

NODE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
INPUT_TYPES = ("string", "number", "integer", "boolean", "object", "array", "file")  # as runs.services checks
RETRY_KEYS = {"max_attempts", "backoff", "initial_delay", "max_delay"}
MAX_ATTEMPTS_LIMIT = 20

# Errors a draft may never hold: they break the document itself or one node/edge on its own.
# Whole-graph problems (cycles, reachability, branch labels) are allowed in a draft being edited and
# block only publishing.
DRAFT_CODES = frozenset(
    {"malformed", "invalid_field", "unknown_type", "invalid_config", "duplicate_node", "missing_node",
     "duplicate_edge", "self_loop"}
)  # fmt: skip


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

    def __str__(self) -> str:
        return self.message


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _edge_key(edge: dict[str, Any]) -> tuple[str, str, str]:
    return (str(edge.get("source")), str(edge.get("target")), edge.get("branch") or "")


def _node_label(node_id: str) -> str:
    return f"Node {node_id!r}"


def _edge_label(key: tuple[str, str, str]) -> str:
    source, target, branch = key
    return f"Edge {source} → {target}" + (f" [{branch}]" if branch else "")


# -- document shape -----------------------------------------------------------------------------


def _check_document(definition: Any) -> list[GraphError]:
    errors: list[GraphError] = []
    fmt = definition.get("format")
    if fmt is not None and fmt != DEFINITION_FORMAT:
        errors.append(
            GraphError("malformed", f"Unknown format {fmt!r}: expected {DEFINITION_FORMAT!r}.", field="format")
        )
    name = definition.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        errors.append(GraphError("malformed", "The name must be a non-empty string.", field="name"))
    elif isinstance(name, str) and len(name) > 200:
        errors.append(GraphError("malformed", "The name is longer than 200 characters.", field="name"))
    if not isinstance(definition.get("description", ""), str):
        errors.append(GraphError("malformed", "The description must be a string.", field="description"))
    tags = definition.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) and tag.strip() for tag in tags):
        errors.append(GraphError("malformed", "Tags must be a list of non-empty strings.", field="tags"))
    variables = definition.get("vars", {})
    if variables is not None and not isinstance(variables, dict):
        errors.append(GraphError("malformed", "vars must be an object.", field="vars"))
    errors.extend(_check_inputs(definition.get("inputs", {})))
    errors.extend(_check_settings(definition.get("settings", {})))
    return errors


def _check_inputs(inputs: Any) -> list[GraphError]:
    if inputs is None:
        return []
    if not isinstance(inputs, dict):
        return [GraphError("malformed", "inputs must be an object of name → spec.", field="inputs")]
    errors: list[GraphError] = []
    for name, spec in inputs.items():
        where = f"inputs.{name}"
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(name)):
            errors.append(GraphError("malformed", f"Input name {name!r} is not an identifier.", field=where))
        if not isinstance(spec, dict):
            errors.append(
                GraphError("malformed", f'Input {name!r} must be an object like {{"type": ...}}.', field=where)
            )
            continue
        if spec.get("type", "string") not in INPUT_TYPES:
            errors.append(
                GraphError(
                    "malformed",
                    f"Input {name!r} has unknown type {spec.get('type')!r} (use one of {', '.join(INPUT_TYPES)}).",
                    field=f"{where}.type",
                )
            )
        if "required" in spec and not isinstance(spec["required"], bool):
            errors.append(GraphError("malformed", f"Input {name!r}: required must be true or false.", field=where))
    return errors


def _check_settings(settings: Any) -> list[GraphError]:
    if settings is None:
        return []
    if not isinstance(settings, dict):
        return [GraphError("malformed", "settings must be an object.", field="settings")]
    errors: list[GraphError] = []
    timeout = settings.get("timeout")
    if timeout is not None and (not _is_number(timeout) or timeout <= 0):
        errors.append(
            GraphError("malformed", "settings.timeout must be a positive number of seconds.", field="settings.timeout")
        )
    limit = settings.get("max_concurrent_runs")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        errors.append(
            GraphError(
                "malformed",
                "settings.max_concurrent_runs must be a whole number of at least 1.",
                field="settings.max_concurrent_runs",
            )
        )
    return errors


def _check_policy(node_id: str, node: dict[str, Any]) -> list[GraphError]:
    """retry / timeout / on_error / name / position of one node."""
    errors: list[GraphError] = []

    def bad(field: str, message: str) -> None:
        errors.append(GraphError("invalid_field", f"{_node_label(node_id)}: {message}", node=node_id, field=field))

    name = node.get("name") or ""
    if not isinstance(name, str) or len(name) > 200:
        bad("name", "name must be a string of at most 200 characters.")
    position = node.get("position")
    if position is not None and not isinstance(position, dict):
        bad("position", 'position must be an object like {"x": 0, "y": 0}.')
    timeout = node.get("timeout")
    if timeout is not None and (not _is_number(timeout) or timeout <= 0):
        bad("timeout", "timeout must be a positive number of seconds.")
    on_error = node.get("on_error")
    if on_error is not None and on_error not in OnError.values:
        bad("on_error", f"on_error must be one of {', '.join(OnError.values)}, not {on_error!r}.")
    retry = node.get("retry")
    if retry is None:
        return errors
    if not isinstance(retry, dict):
        bad("retry", "retry must be an object.")
        return errors
    for key in sorted(set(retry) - RETRY_KEYS):
        bad(f"retry.{key}", f"unknown retry setting {key!r} (use {', '.join(sorted(RETRY_KEYS))}).")
    attempts = retry.get("max_attempts")
    if attempts is not None and (
        not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= MAX_ATTEMPTS_LIMIT
    ):
        bad("retry.max_attempts", f"retry.max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}.")
    backoff = retry.get("backoff")
    if backoff is not None and backoff not in Backoff.values:
        bad("retry.backoff", f"retry.backoff must be one of {', '.join(Backoff.values)}.")
    for key in ("initial_delay", "max_delay"):
        value = retry.get(key)
        if value is not None and (not _is_number(value) or value < 0):
            bad(f"retry.{key}", f"retry.{key} must be a number of seconds, 0 or more.")
    return errors


def _check_nodes(nodes: list[Any]) -> tuple[list[GraphError], dict[str, dict[str, Any]]]:
    """Check every node on its own. Returns errors and the usable nodes by id (first one wins)."""
    from .nodes import get_node_type

    errors: list[GraphError] = []
    by_id: dict[str, dict[str, Any]] = {}
    for index, node in enumerate(nodes):
        where = f"nodes[{index}]"
        if not isinstance(node, dict):
            errors.append(GraphError("malformed", f"{where} must be an object.", field=where))
            continue
        node_id = node.get("id")
        if not isinstance(node_id, str) or not NODE_ID_RE.match(node_id):
            errors.append(
                GraphError(
                    "malformed",
                    f"{where}: id {node_id!r} must be 1-64 letters, digits, '-' or '_'.",
                    node=node_id if isinstance(node_id, str) else None,
                    field=f"{where}.id",
                )
            )
            continue
        if node_id in by_id:
            errors.append(
                GraphError(
                    "duplicate_node", f"{_node_label(node_id)} is defined more than once.", node=node_id, field="id"
                )
            )
            continue
        by_id[node_id] = node
        errors.extend(_check_policy(node_id, node))
        node_type_name = node.get("type")
        if not isinstance(node_type_name, str) or not node_type_name:
            errors.append(GraphError("malformed", f"{_node_label(node_id)} has no type.", node=node_id, field="type"))
            continue
        node_type = get_node_type(node_type_name)
        if node_type is None:
            errors.append(
                GraphError(
                    "unknown_type",
                    f"{_node_label(node_id)} has unknown type {node_type_name!r}.",
                    node=node_id,
                    field="type",
                )
            )
            continue
        config = node.get("config", {})
        if config is None:
            config = {}
        for problem in node_type.validate_config(config):
            errors.append(
                GraphError(
                    "invalid_config",
                    f"{_node_label(node_id)}: {problem}",
                    node=node_id,
                    field=problem.path or "config",
                )
            )
    return errors, by_id


def _check_edges(
    edges: list[Any], by_id: dict[str, dict[str, Any]]
) -> tuple[list[GraphError], list[tuple[str, str, str]]]:
    """Check every edge on its own. Returns errors and the usable edges as (source, target, branch)."""
    from .nodes import get_node_type

    errors: list[GraphError] = []
    usable: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str, str]] = set()
    for index, edge in enumerate(edges):
        where = f"edges[{index}]"
        if not isinstance(edge, dict):
            errors.append(GraphError("malformed", f"{where} must be an object.", field=where))
            continue
        source, target, branch = edge.get("source"), edge.get("target"), edge.get("branch")
        if (
            not isinstance(source, str)
            or not isinstance(target, str)
            or not (branch is None or isinstance(branch, str))
        ):
            errors.append(
                GraphError(
                    "malformed", f"{where} needs string source and target (and an optional string branch).", field=where
                )
            )
            continue
        key = _edge_key(edge)
        if len(key[2]) > 64:
            errors.append(
                GraphError("malformed", f"{_edge_label(key)}: branch is longer than 64 characters.", edge=key)
            )
            continue
        missing = [end for end in (source, target) if end not in by_id]
        if missing:
            names = " and ".join(repr(m) for m in dict.fromkeys(missing))
            errors.append(GraphError("missing_node", f"{_edge_label(key)} refers to missing node {names}.", edge=key))
            continue
        if source == target:
            errors.append(
                GraphError(
                    "self_loop", f"{_edge_label(key)} connects node {source!r} to itself.", edge=key, node=source
                )
            )
            continue
        if key in seen:
            errors.append(GraphError("duplicate_edge", f"{_edge_label(key)} appears more than once.", edge=key))
            continue
        seen.add(key)
        usable.append(key)
        if key[2]:
            errors.extend(_check_branch(key, by_id[source], get_node_type))
    return errors, usable


def _check_branch(key: tuple[str, str, str], source_node: dict[str, Any], get_node_type) -> list[GraphError]:
    source, _target, branch = key
    node_type = get_node_type(source_node.get("type") or "")
    if node_type is None:
        return []  # already reported as unknown_type
    config = source_node.get("config") or {}
    try:
        offered = list(node_type.branches_for(config if isinstance(config, dict) else {}))
    except Exception:  # a broken config is reported by the schema check
        offered = list(node_type.branches)
    if branch == ERROR_BRANCH:
        if (source_node.get("on_error") or OnError.FAIL) != OnError.BRANCH:
            return [
                GraphError(
                    "bad_branch",
                    f"{_edge_label(key)}: the error branch needs on_error 'branch' on node {source!r}.",
                    edge=key,
                    node=source,
                )
            ]
        return []
    if branch not in offered:
        offers = ", ".join(repr(b) for b in [*offered, ERROR_BRANCH])
        return [
            GraphError(
                "bad_branch",
                f"{_edge_label(key)}: a {node_type.name} node has no branch {branch!r} (it offers {offers}).",
                edge=key,
                node=source,
            )
        ]
    return []


# -- whole-graph checks -------------------------------------------------------------------------


def _strongly_connected(order: list[str], children: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative. Components come out in no particular order."""
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in order:
        if root in index_of:
            continue
        work = [(root, iter(children.get(root, [])))]
        index_of[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index_of:
                    index_of[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(children.get(succ, []))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index_of[succ])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _cycle_path(component: list[str], children: dict[str, list[str]], order: list[str]) -> list[str]:
    """The shortest cycle through the component's first declared node (breadth-first search back to it)."""
    members = set(component)
    start = min(component, key=order.index)
    previous: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node in frontier:
            for child in children.get(node, []):
                if child == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return list(reversed(path))
                if child in members and child not in previous:
                    previous[child] = node
                    next_frontier.append(child)
        frontier = next_frontier
    return sorted(component, key=order.index)


def _check_graph(by_id: dict[str, dict[str, Any]], edges: list[tuple[str, str, str]]) -> list[GraphError]:
    order = list(by_id)
    if not order:
        return [GraphError("no_start", "The workflow has no nodes: add at least one.")]
    children: dict[str, list[str]] = defaultdict(list)
    parents: dict[str, list[str]] = defaultdict(list)
    for source, target, _branch in edges:
        if target not in children[source]:
            children[source].append(target)
            parents[target].append(source)
    errors: list[GraphError] = []

    cyclic: set[str] = set()
    for component in _strongly_connected(order, children):
        if len(component) > 1:
            cycle = _cycle_path(component, children, order)
            cyclic.update(component)
            shown = " → ".join([*cycle, cycle[0]])
            errors.append(
                GraphError("cycle", f"The nodes {', '.join(sorted(component, key=order.index))} form a cycle: {shown}.",
                           node=cycle[0])
            )  # fmt: skip

    starts = [node_id for node_id in order if not parents[node_id]]
    if not starts:
        errors.append(GraphError("no_start", "No start node: every node has an incoming edge."))

    reachable: set[str] = set()
    frontier = list(starts)
    while frontier:
        node = frontier.pop()
        if node in reachable:
            continue
        reachable.add(node)
        frontier.extend(children[node])
    if starts:
        for node_id in order:
            if node_id not in reachable:
                errors.append(
                    GraphError(
                        "unreachable",
                        f"{_node_label(node_id)} cannot be reached from a start node.",
                        node=node_id,
                    )
                )

    # Weakly connected components: one workflow is one connected graph.
    component_of: dict[str, int] = {}
    components: list[list[str]] = []
    for root in order:
        if root in component_of:
            continue
        members, frontier = [], [root]
        component_of[root] = len(components)
        while frontier:
            node = frontier.pop()
            members.append(node)
            for neighbour in (*children[node], *parents[node]):
                if neighbour not in component_of:
                    component_of[neighbour] = len(components)
                    frontier.append(neighbour)
        components.append(sorted(members, key=order.index))
    if len(components) > 1:
        main = max(components, key=len)
        for component in components:
            if component is main:
                continue
            names = ", ".join(component)
            errors.append(
                GraphError(
                    "disconnected",
                    f"Node{'s' if len(component) > 1 else ''} {names} "
                    f"{'are' if len(component) > 1 else 'is'} not connected to the rest of the workflow.",
                    node=component[0],
                )
            )
    return errors


# -- public API ---------------------------------------------------------------------------------


def validate_definition(definition: dict[str, Any]) -> list[GraphError]:
    """Every problem in ``definition`` (a graphwright/v1 document), each naming its node, edge or field."""
    if not isinstance(definition, dict):
        return [GraphError("malformed", "A workflow definition must be a JSON object.")]
    errors = _check_document(definition)
    nodes = definition.get("nodes", [])
    edges = definition.get("edges", [])
    if nodes is None:
        nodes = []
    if edges is None:
        edges = []
    if not isinstance(nodes, list):
        errors.append(GraphError("malformed", "nodes must be a list.", field="nodes"))
        nodes = []
    if not isinstance(edges, list):
        errors.append(GraphError("malformed", "edges must be a list.", field="edges"))
        edges = []
    node_errors, by_id = _check_nodes(nodes)
    edge_errors, usable = _check_edges(edges, by_id)
    errors.extend(node_errors)
    errors.extend(edge_errors)
    if not any(e.code == "malformed" and e.field in {"nodes", "edges"} for e in errors):
        errors.extend(_check_graph(by_id, usable))
    return errors


def draft_errors(definition: dict[str, Any]) -> list[GraphError]:
    """The errors a saved draft may not hold (see ``DRAFT_CODES``); publishing needs none at all."""
    return [error for error in validate_definition(definition) if error.code in DRAFT_CODES]


def _usable_graph(definition: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, str]]]:
    order: list[str] = []
    for node in definition.get("nodes") or []:
        if isinstance(node, dict) and isinstance(node.get("id"), str) and node["id"] not in order:
            order.append(node["id"])
    known = set(order)
    edges: list[tuple[str, str, str]] = []
    for edge in definition.get("edges") or []:
        if not isinstance(edge, dict):
            continue
        key = _edge_key(edge)
        if key[0] in known and key[1] in known and key not in edges:
            edges.append(key)
    return order, edges


def adjacency(
    definition: dict[str, Any],
) -> tuple[dict[str, list[tuple[str, str]]], dict[str, list[tuple[str, str]]]]:
    """``(parents, children)``: node id → list of ``(other node id, branch)``, in declaration order.

    ``branch`` is ``""`` for an unlabelled edge. Every node has an entry, possibly empty.
    """
    order, edges = _usable_graph(definition)
    parents: dict[str, list[tuple[str, str]]] = {node_id: [] for node_id in order}
    children: dict[str, list[tuple[str, str]]] = {node_id: [] for node_id in order}
    for source, target, branch in edges:
        children[source].append((target, branch))
        parents[target].append((source, branch))
    return parents, children


def start_nodes(definition: dict[str, Any]) -> list[str]:
    """Nodes without an incoming edge, in declaration order."""
    parents, _ = adjacency(definition)
    return [node_id for node_id, incoming in parents.items() if not incoming]


class GraphCycleError(ValueError):
    """The graph has a cycle, so it has no topological order."""

    def __init__(self, nodes: list[str]):
        super().__init__(f"The nodes {', '.join(nodes)} form a cycle.")
        self.nodes = nodes


def topological_layers(definition: dict[str, Any], *, strict: bool = True) -> list[list[str]]:
    """Nodes grouped in layers: every node comes after all of its parents (declaration order inside a layer).

    A node's layer is its longest distance from a start node, which is also the column the diagram
    draws it in. With a cycle, ``strict`` raises :class:`GraphCycleError`; otherwise the nodes on or
    after the cycle go in one last layer (the editor still draws a broken draft).
    """
    order, edges = _usable_graph(definition)
    indegree = dict.fromkeys(order, 0)
    children: dict[str, list[str]] = {node_id: [] for node_id in order}
    for source, target, _branch in edges:
        if target not in children[source]:
            children[source].append(target)
            indegree[target] += 1
    layers: list[list[str]] = []
    current = [node_id for node_id in order if indegree[node_id] == 0]
    placed: set[str] = set()
    while current:
        layers.append(current)
        placed.update(current)
        ready: set[str] = set()
        for node_id in current:
            for child in children[node_id]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.add(child)
        current = [node_id for node_id in order if node_id in ready]
    leftover = [node_id for node_id in order if node_id not in placed]
    if leftover:
        if strict:
            raise GraphCycleError(leftover)
        layers.append(leftover)
    return layers


def topological_order(definition: dict[str, Any], *, strict: bool = True) -> list[str]:
    """The layers flattened: an order in which every node comes after its parents."""
    return [node_id for layer in topological_layers(definition, strict=strict) for node_id in layer]
