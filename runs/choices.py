"""Run and NodeRun statuses, each with one explicit table of allowed transitions."""

from django.db import models


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class NodeRunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


class TriggerType(models.TextChoices):
    MANUAL = "manual", "Manual"
    API = "api", "API"
    WEBHOOK = "webhook", "Webhook"
    SCHEDULE = "schedule", "Schedule"
    SUBWORKFLOW = "subworkflow", "Sub-workflow"
    RERUN = "rerun", "Rerun"
    AGENT = "agent", "Agent tool"


RUN_FINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
NODE_FINAL = frozenset({NodeRunStatus.SUCCEEDED, NodeRunStatus.FAILED, NodeRunStatus.SKIPPED, NodeRunStatus.CANCELLED})

RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.RUNNING: frozenset({RunStatus.WAITING, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.WAITING: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}

NODE_TRANSITIONS: dict[str, frozenset[str]] = {
    NodeRunStatus.PENDING: frozenset({NodeRunStatus.RUNNING, NodeRunStatus.SKIPPED, NodeRunStatus.CANCELLED}),
    NodeRunStatus.RUNNING: frozenset(
        {
            NodeRunStatus.RUNNING,  # a retry: the same node, a new attempt
            NodeRunStatus.SUCCEEDED,
            NodeRunStatus.FAILED,
            NodeRunStatus.WAITING,
            NodeRunStatus.CANCELLED,
        }
    ),
    NodeRunStatus.WAITING: frozenset({NodeRunStatus.SUCCEEDED, NodeRunStatus.FAILED, NodeRunStatus.CANCELLED}),
    NodeRunStatus.SUCCEEDED: frozenset(),
    NodeRunStatus.FAILED: frozenset(),
    NodeRunStatus.SKIPPED: frozenset(),
    NodeRunStatus.CANCELLED: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, kind: str, current: str, new: str):
        super().__init__(f"Illegal {kind} transition: {current} → {new}")
        self.current = current
        self.new = new
