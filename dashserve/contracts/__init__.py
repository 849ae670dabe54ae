"""Shared contracts at the bottom of the import graph: the types that cross layers.

Serving builds an ``EngineRequest`` (token ids, ``SamplingParams``, multimodal items) and the
engine answers with ``EngineEvent``s; platform and api read ``EngineStats``, ``FinishReason``
and ``TokenLogprob`` from here, never from the engine. ``chat_format`` holds the one
definition of the model's chat markers that both the engine and serving use. Modules here
import nothing from dashserve but ``errors`` (and each other).
"""
