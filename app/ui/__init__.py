"""The coder review UI: server-rendered pages under /ui/ that call the same services as the API."""
