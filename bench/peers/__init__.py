"""Peer servers (other inference stacks) that benchmarks run side by side with dashserve."""
