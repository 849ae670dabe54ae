"""Content screening for ``X-DashScope-DataInspection``: the header, rule lists per
workspace (keywords and regular expressions), and the screening of input and output."""
