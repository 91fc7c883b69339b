from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from accounts.models import Workspace, WorkspaceScopedQuerySet
from workflows.models import Workflow, WorkflowVersion

from .choices import NodeRunStatus, RunStatus, TriggerType


class RunQuerySet(WorkspaceScopedQuerySet):
    def active(self) -> RunQuerySet:
        return self.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING])


class Run(models.Model):
    """One execution of a pinned WorkflowVersion. The row is the source of truth, never the broker.

    ``lease_owner``/``lease_expires_at`` say which worker executes it; a heartbeat renews the lease
    and the reaper re-enqueues runs whose lease expired. ``attempt`` counts those deliveries.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="runs")
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="runs")
    version = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)
    trigger = models.CharField(max_length=16, choices=TriggerType.choices, default=TriggerType.MANUAL)
    inputs = models.JSONField(default=dict, blank=True)
    outputs = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    parent_node_id = models.CharField(max_length=64, blank=True)
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns")
    rerun_from = models.CharField(max_length=64, blank=True)
    lease_owner = models.CharField(max_length=128, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempt = models.PositiveIntegerField(default=0)
    event_seq = models.PositiveIntegerField(default=0, help_text="The last RunEvent.seq allocated for this run.")
    idempotency_key = models.CharField(max_length=255, blank=True)
    request_hash = models.CharField(max_length=64, blank=True)
    callback_url = models.URLField(max_length=1000, blank=True)
    token_budget = models.PositiveBigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["workspace", "status"]),
            models.Index(fields=["workflow", "status", "created_at"]),
            models.Index(fields=["status", "lease_expires_at"]),
            # The queued backlog, oldest first, that a worker may take along (engine._backlog).
            models.Index(fields=["id"], condition=Q(status="queued"), name="run_queued_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["created_by", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="unique_run_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"Run #{self.pk} of {self.workflow} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class NodeRun(models.Model):
    """The execution of one node in a run: its status, current attempt, input, output and logs."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="node_runs")
    node_id = models.CharField(max_length=64)
    node_type = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=NodeRunStatus.choices, default=NodeRunStatus.PENDING)
    attempt = models.PositiveIntegerField(default=0)
    input = models.JSONField(null=True, blank=True, help_text="The rendered config the node ran with.")
    output = models.JSONField(null=True, blank=True)
    branch = models.CharField(max_length=64, blank=True, help_text="The branch the node took.")
    error = models.TextField(blank=True)
    logs = models.JSONField(default=list, blank=True)
    idempotency_key = models.CharField(max_length=255, blank=True)
    reused_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Set on a rerun when the output was reused, not executed.",
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["run", "node_id"], name="unique_node_run")]

    def __str__(self) -> str:
        return f"{self.node_id} in run #{self.run_id} ({self.status})"


class RunEvent(models.Model):
    """One numbered event of a run. ``seq`` is unique per run and gap-free: clients resume after it."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="unique_event_seq")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}"

    def as_message(self) -> dict:
        return {"seq": self.seq, "type": self.type, "data": self.data, "created_at": self.created_at.isoformat()}


def artifact_path(instance: Artifact, filename: str) -> str:
    return f"artifacts/{instance.run_id}/{filename}"


class ArtifactQuerySet(WorkspaceScopedQuerySet):
    workspace_path = "run__workspace"


class Artifact(models.Model):
    """A file a run produced (``result.json``, an oversized output, an uploaded input)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    node_run = models.ForeignKey(NodeRun, null=True, blank=True, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100, default="application/octet-stream")
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    file = models.FileField(upload_to=artifact_path, max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ArtifactQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name
