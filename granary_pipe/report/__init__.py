"""Reports on runs and releases: a terminal summary (and, later, an HTML page)."""
