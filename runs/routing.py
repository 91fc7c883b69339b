"""WebSocket routes."""

from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/runs/<int:run_id>/", consumers.RunEventsConsumer.as_asgi()),
    path("ws/events/", consumers.UserEventsConsumer.as_asgi()),
]
