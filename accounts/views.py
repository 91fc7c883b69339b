"""Account pages: sign-in/out/up, API tokens, workspaces and their members."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.urls import NoReverseMatch, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.generic import FormView

from . import services
from .choices import Action, Role
from .forms import ApiTokenForm, MemberInviteForm, MemberRoleForm, SignUpForm, WorkspaceForm
from .middleware import SESSION_KEY
from .models import Membership, Workspace
from .permissions import can


def home_url() -> str:
    """Where a signed-in user lands (``LOGIN_REDIRECT_URL``; ``/`` until the dashboard exists)."""
    try:
        return resolve_url(settings.LOGIN_REDIRECT_URL)
    except NoReverseMatch:
        return "/"


def _add_errors(form, error: ValidationError) -> None:
    if hasattr(error, "error_dict"):
        for field, messages_ in error.message_dict.items():
            form.add_error(field if field in form.fields else None, messages_)
    else:
        form.add_error(None, error.messages)


class SignInView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        return home_url()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "signup_enabled": settings.SIGNUP_ENABLED}

    def form_valid(self, form) -> HttpResponse:
        from .audit import audit

        response = super().form_valid(form)
        audit(action="auth.signin", actor=form.get_user(), ip_address=self.request.META.get("REMOTE_ADDR") or None)
        return response

    def form_invalid(self, form) -> HttpResponse:
        from .audit import audit

        username = str(form.data.get("username", ""))[:150]
        ip_address = self.request.META.get("REMOTE_ADDR") or None
        audit(action="auth.failed", data={"username": username}, ip_address=ip_address)
        return super().form_invalid(form)


class SignOutView(auth_views.LogoutView):
    """POST only (Django's LogoutView refuses GET): a link cannot sign anyone out."""


class SignUpView(FormView):
    template_name = "registration/signup.html"
    form_class = SignUpForm

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.SIGNUP_ENABLED:
            return render(request, "registration/signup_closed.html", status=404)
        if request.user.is_authenticated:
            return redirect(home_url())
        return super().dispatch(request, *args, **kwargs)

    def form_valid(self, form: SignUpForm) -> HttpResponse:
        user = services.user_create(
            username=form.cleaned_data["username"],
            email=form.cleaned_data.get("email") or "",
            password=form.cleaned_data["password1"],
        )
        login(self.request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(self.request, f"Welcome, {user.username}! Your personal workspace is ready.")
        return redirect(home_url())


# -- API tokens ---------------------------------------------------------------------------------


class TokenListView(LoginRequiredMixin, View):
    """Lists the user's tokens; POST creates one and shows its key once, on this response only."""

    template_name = "accounts/tokens.html"

    def render_page(
        self, request: HttpRequest, form: ApiTokenForm, new_key: str = "", status: int = 200
    ) -> HttpResponse:
        tokens = request.user.api_tokens.all()
        return render(request, self.template_name, {"form": form, "tokens": tokens, "new_key": new_key}, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.render_page(request, ApiTokenForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = ApiTokenForm(request.POST)
        if form.is_valid():
            try:
                token, key = services.api_token_create(user=request.user, name=form.cleaned_data["name"])
            except ValidationError as exc:
                _add_errors(form, exc)
            else:
                messages.success(request, f"Token “{token.name}” created. Copy it now: it will not be shown again.")
                return self.render_page(request, ApiTokenForm(), new_key=key, status=201)
        return self.render_page(request, form, status=400)


class TokenRevokeView(LoginRequiredMixin, View):
    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        token = get_object_or_404(request.user.api_tokens, pk=pk)
        services.api_token_revoke(token=token, user=request.user)
        messages.success(request, f"Token “{token.name}” revoked.")
        return redirect("accounts:tokens")


# -- workspaces ---------------------------------------------------------------------------------


class WorkspaceListView(LoginRequiredMixin, View):
    """The user's workspaces with their role in each, and a form to create one."""

    def get(self, request: HttpRequest, form: WorkspaceForm | None = None) -> HttpResponse:
        memberships = (
            Membership.objects.filter(user=request.user).select_related("workspace").order_by("workspace__name")
        )
        return render(
            request,
            "accounts/workspaces.html",
            {"memberships": memberships, "form": form or WorkspaceForm(), "roles": Role},
            status=400 if form is not None else 200,
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        form = WorkspaceForm(request.POST)
        if form.is_valid():
            try:
                workspace = services.workspace_create(name=form.cleaned_data["name"], owner=request.user)
            except ValidationError as exc:
                _add_errors(form, exc)
            else:
                request.session[SESSION_KEY] = workspace.pk
                messages.success(request, f"Workspace “{workspace.name}” created and selected.")
                return redirect("accounts:members", pk=workspace.pk)
        return self.get(request, form=form)


class WorkspaceSwitchView(LoginRequiredMixin, View):
    """POST ``workspace`` (an id): make it the current workspace, then go back where the user was."""

    def post(self, request: HttpRequest) -> HttpResponse:
        workspace = Workspace.objects.for_user(request.user).filter(pk=request.POST.get("workspace") or 0).first()
        if workspace is None:
            raise Http404("No such workspace.")
        request.session[SESSION_KEY] = workspace.pk
        target = request.POST.get("next") or request.META.get("HTTP_REFERER") or "/"
        if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
            target = "/"
        return redirect(target)


class MembersView(LoginRequiredMixin, View):
    """Members of one workspace: everyone may look; owners invite, change roles and remove."""

    def get_workspace(self, request: HttpRequest, pk: int) -> Workspace:
        return get_object_or_404(Workspace.objects.for_user(request.user), pk=pk)

    def get(self, request: HttpRequest, pk: int, invite_form: MemberInviteForm | None = None) -> HttpResponse:
        workspace = self.get_workspace(request, pk)
        memberships = workspace.memberships.select_related("user").order_by("user__username")
        return render(
            request,
            "accounts/members.html",
            {
                "workspace": workspace,
                "memberships": memberships,
                "can_manage": can(request.user, workspace, Action.MANAGE),
                "invite_form": invite_form or MemberInviteForm(),
                "roles": Role.choices,
            },
            status=400 if invite_form is not None else 200,
        )

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        workspace = self.get_workspace(request, pk)
        if not can(request.user, workspace, Action.MANAGE):
            raise PermissionDenied("Only owners manage members.")
        form = MemberInviteForm(request.POST)
        if form.is_valid():
            try:
                membership = services.membership_add(
                    workspace=workspace,
                    actor=request.user,
                    identifier=form.cleaned_data["user"],
                    role=form.cleaned_data["role"],
                )
            except ValidationError as exc:
                _add_errors(form, exc)
            else:
                messages.success(request, f"{membership.user.username} joined as {membership.get_role_display()}.")
                return redirect("accounts:members", pk=workspace.pk)
        return self.get(request, pk, invite_form=form)


class MemberChangeView(LoginRequiredMixin, View):
    """POST ``role`` to change a member's role, or ``remove`` to remove them."""

    def post(self, request: HttpRequest, pk: int, membership_pk: int) -> HttpResponse:
        workspace = get_object_or_404(Workspace.objects.for_user(request.user), pk=pk)
        membership = get_object_or_404(workspace.memberships.select_related("user"), pk=membership_pk)
        leaving = membership.user_id == request.user.pk
        try:
            with transaction.atomic():
                if "remove" in request.POST:
                    services.membership_remove(membership=membership, actor=request.user)
                    messages.success(request, f"{membership.user.username} was removed.")
                else:
                    form = MemberRoleForm(request.POST)
                    if not form.is_valid():
                        raise ValidationError({"role": ["Choose a valid role."]})
                    services.membership_set_role(
                        membership=membership, actor=request.user, role=form.cleaned_data["role"]
                    )
                    messages.success(request, f"{membership.user.username} is now {form.cleaned_data['role']}.")
        except ValidationError as exc:
            for message in exc.messages:
                messages.error(request, message)
            return redirect("accounts:members", pk=workspace.pk)
        if leaving and "remove" in request.POST:
            if request.session.get(SESSION_KEY) == workspace.pk:
                request.session.pop(SESSION_KEY)
            return redirect("accounts:workspaces")
        return redirect(reverse("accounts:members", kwargs={"pk": workspace.pk}))
