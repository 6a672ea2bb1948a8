"""Output: the record format, tables, JSON lines and CSV, ladder diagrams, annotated captures."""
