"""OpenAI-compatible API (/compatible-mode/v1)."""
