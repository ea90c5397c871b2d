"""Helpers shared by test packages; import as `helpers.<module>` (tests/ is on sys.path)."""
