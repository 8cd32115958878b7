"""Command groups of the `notecoder` CLI, each registering its commands on the main Typer app."""
