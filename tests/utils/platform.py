"""A started platform for tests: ``prepare_platform`` and ``open`` in one call."""

from __future__ import annotations

from collections.abc import Callable

from dashserve.platform.state import PlatformSettings, PlatformState, prepare_platform


async def build_platform(settings: PlatformSettings, *,
                         on_bootstrap_key: Callable[[str], None] | None = None) -> PlatformState:
    """The platform, migrated, with its first key created and its usage writer running."""
    state = prepare_platform(settings, on_bootstrap_key=on_bootstrap_key)
    await state.open()
    return state
