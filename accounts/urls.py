from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("login/", views.SignInView.as_view(), name="login"),
    path("logout/", views.SignOutView.as_view(), name="logout"),
    path("signup/", views.SignUpView.as_view(), name="signup"),
    path("tokens/", views.TokenListView.as_view(), name="tokens"),
    path("tokens/<int:pk>/revoke/", views.TokenRevokeView.as_view(), name="token_revoke"),
    path("workspaces/", views.WorkspaceListView.as_view(), name="workspaces"),
    path("workspaces/switch/", views.WorkspaceSwitchView.as_view(), name="workspace_switch"),
    path("workspaces/<int:pk>/members/", views.MembersView.as_view(), name="members"),
    path(
        "workspaces/<int:pk>/members/<int:membership_pk>/",
        views.MemberChangeView.as_view(),
        name="member_change",
    ),
]
