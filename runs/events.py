"""Run events: stored, numbered per run, pushed to channel-layer groups after commit.

Groups (issue 6's consumers listen on them):
- ``run_group(run_id)``: every event of one run, message ``{"type": "run.event", "event": {...}}``.
- ``workspace_group(workspace_id)``: run status changes, message ``{"type": "run.status", "run": {...}}``.
"""

from __future__ import annotations


def run_group(run_id: int) -> str:
    return f"run-{run_id}"


def workspace_group(workspace_id: int) -> str:
    return f"workspace-{workspace_id}"
