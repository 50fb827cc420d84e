"""Reports on runs and releases: a summary dict (``summary``), its terminal text (``text``), an HTML
page (``html``, ``plots``), rule quality; ``fmt`` formats every number and table."""
