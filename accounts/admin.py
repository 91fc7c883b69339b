from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import User


@admin.register(User)
class GraphwrightUserAdmin(UserAdmin):
    fieldsets = (*UserAdmin.fieldsets, ("Budgets", {"fields": ("monthly_token_budget",)}))
