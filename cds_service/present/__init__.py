"""Decision -> typed CDS Hooks cards (texts from knowledge, escaped evidence, links, suggestions)."""
