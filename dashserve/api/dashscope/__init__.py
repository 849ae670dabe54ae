"""DashScope native API (/api/v1)."""
