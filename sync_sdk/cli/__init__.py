"""The sync-sdk command line: `sync-sdk COMMAND` (main.py; models.py, analysis.py; options in args.py)."""
from sync_sdk.cli.main import main

__all__ = ["main"]
