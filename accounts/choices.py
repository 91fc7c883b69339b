from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    EDITOR = "editor", "Editor"
    RUNNER = "runner", "Runner"
    VIEWER = "viewer", "Viewer"


class Action(models.TextChoices):
    """What a user wants to do in a workspace; roles grant sets of these."""

    VIEW = "view", "View"
    RUN = "run", "Start and cancel runs"
    EDIT = "edit", "Change workflows, credentials and collections"
    MANAGE = "manage", "Manage members and read the audit log"


ROLE_ACTIONS: dict[str, frozenset[str]] = {
    Role.OWNER: frozenset({Action.VIEW, Action.RUN, Action.EDIT, Action.MANAGE}),
    Role.EDITOR: frozenset({Action.VIEW, Action.RUN, Action.EDIT}),
    Role.RUNNER: frozenset({Action.VIEW, Action.RUN}),
    Role.VIEWER: frozenset({Action.VIEW}),
}


def roles_allowing(action: str) -> list[str]:
    return [role for role, actions in ROLE_ACTIONS.items() if action in actions]
