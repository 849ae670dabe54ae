"""Multimodal inputs and their preprocessing (no HTTP, no database)."""
