from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models

from accounts.models import Workspace, WorkspaceScopedQuerySet

from .choices import OnError, TriggerKind


class WorkflowQuerySet(WorkspaceScopedQuerySet):
    def active(self) -> WorkflowQuerySet:
        return self.filter(archived_at__isnull=True)

    def archived(self) -> WorkflowQuerySet:
        return self.filter(archived_at__isnull=False)


class Workflow(models.Model):
    """A graph of nodes. Its Node and Edge rows are the editable draft; runs pin a WorkflowVersion.

    Deleting a workflow archives it (``archived_at``) so its run history is never lost.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="workflows")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=220)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True, help_text="Inactive workflows cannot be started by triggers.")
    inputs = models.JSONField(default=dict, blank=True, help_text='Declared inputs: {"name": {"type": ..., ...}}')
    variables = models.JSONField(default=dict, blank=True, help_text="Constants templates read as `vars`.")
    max_concurrent_runs = models.PositiveIntegerField(null=True, blank=True)
    timeout = models.FloatField(null=True, blank=True, help_text="Run-level timeout in seconds.")
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WorkflowQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["workspace", "slug"], name="unique_workflow_slug")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    def latest_version(self) -> WorkflowVersion | None:
        return self.versions.order_by("-number").first()


class Node(models.Model):
    """One step of a workflow: a node type, its config, and the policy the engine applies to it."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="nodes")
    node_id = models.SlugField(max_length=64, help_text="Stable id, unique in the workflow; templates use it.")
    type = models.CharField(max_length=64)
    name = models.CharField(max_length=200, blank=True)
    config = models.JSONField(default=dict, blank=True)
    position = models.JSONField(default=dict, blank=True, help_text='{"x": .., "y": ..} for the diagram.')
    retry = models.JSONField(
        default=dict,
        blank=True,
        help_text='{"max_attempts": 3, "backoff": "exponential", "initial_delay": 0.5, "max_delay": 30}',
    )
    timeout = models.FloatField(null=True, blank=True, help_text="Seconds one attempt may take.")
    on_error = models.CharField(max_length=16, choices=OnError.choices, default=OnError.FAIL)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["workflow", "node_id"], name="unique_node_id")]

    def __str__(self) -> str:
        return f"{self.node_id} ({self.type})"


class Edge(models.Model):
    """A connection from one node to another, optionally only when ``branch`` is taken."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="edges")
    source = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="out_edges")
    target = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="in_edges")
    branch = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "source", "target", "branch"], name="unique_edge"),
        ]

    def __str__(self) -> str:
        suffix = f" [{self.branch}]" if self.branch else ""
        return f"{self.source.node_id} → {self.target.node_id}{suffix}"


class WorkflowVersion(models.Model):
    """An immutable snapshot of a workflow's definition (graphwright/v1). Runs pin one."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [models.UniqueConstraint(fields=["workflow", "number"], name="unique_version_number")]

    def __str__(self) -> str:
        return f"{self.workflow} v{self.number}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError("A workflow version is never changed after it is created.")
        super().save(*args, **kwargs)


def _webhook_token() -> str:
    return secrets.token_urlsafe(24)


class TriggerQuerySet(WorkspaceScopedQuerySet):
    workspace_path = "workflow__workspace"


class Trigger(models.Model):
    """Starts a workflow from outside: a webhook URL or a cron schedule (a django-q2 Schedule)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="triggers")
    kind = models.CharField(max_length=16, choices=TriggerKind.choices)
    token = models.CharField(max_length=64, unique=True, default=_webhook_token)
    cron = models.CharField(max_length=100, blank=True)
    inputs = models.JSONField(default=dict, blank=True)
    respond_with_result = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    schedule = models.OneToOneField(
        "django_q.Schedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_fired_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TriggerQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} trigger for {self.workflow}"
