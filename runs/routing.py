"""WebSocket routes (issue 6 adds the consumers)."""

websocket_urlpatterns: list = []
