"""The sync-sdk command line: `sync-sdk COMMAND` (main.py), analysis commands in analysis.py."""
from sync_sdk.cli.main import main

__all__ = ["main"]
