"""Upstream engine pools: DashScope's front over OpenAI-compatible and token-id servers."""
