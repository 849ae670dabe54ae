"""Web search for ``enable_search``: providers (local FTS5 index, SearXNG, a key-based HTTP
API), the ``search_options`` rules, and how results enter the prompt and the answer."""
