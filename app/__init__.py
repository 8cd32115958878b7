"""notecoder service: HTTP API, coder UI, command line."""
