"""Fault injection for the reliability checks of issue #27 (media fuzzing: media_fuzz.py)."""
