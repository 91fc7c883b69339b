from .models import Workspace


def workspaces(request):
    """The workspace switcher: the user's workspaces and the current one."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "current_workspace": getattr(request, "workspace", None),
        "user_workspaces": Workspace.objects.for_user(user),
    }
