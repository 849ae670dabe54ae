"""Media references (URLs, data URLs, uploads, local files) resolved to bytes."""
