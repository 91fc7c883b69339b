from django.db import models


class OnError(models.TextChoices):
    FAIL = "fail", "Fail the run"
    CONTINUE = "continue", "Continue with the error as output"
    BRANCH = "branch", "Follow the error branch"


class Backoff(models.TextChoices):
    FIXED = "fixed", "Fixed"
    EXPONENTIAL = "exponential", "Exponential"


class TriggerKind(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"
    SCHEDULE = "schedule", "Schedule"


ERROR_BRANCH = "error"
DEFINITION_FORMAT = "graphwright/v1"
