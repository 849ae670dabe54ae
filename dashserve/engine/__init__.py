"""Continuous-batching inference engine: knows tokens and tensors, nothing of HTTP."""
