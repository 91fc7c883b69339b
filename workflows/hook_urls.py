from django.urls import path

from .hooks import webhook

urlpatterns = [path("<str:token>/", webhook, name="hook")]
