"""The files API: compatible mode (/compatible-mode/v1/files) and native (/api/v1/files)."""
