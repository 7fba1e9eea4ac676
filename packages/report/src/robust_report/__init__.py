"""robust report: finished runs aggregated over seeds, rendered as a table, Markdown, CSV, JSON or a figure."""
