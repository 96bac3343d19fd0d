"""Session fixtures for export: filled in by the export work."""
