"""Engines outside this process: remote dashserve engines, other servers, and pools of them."""
