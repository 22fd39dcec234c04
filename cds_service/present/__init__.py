"""Decision -> typed CDS Hooks cards (texts from knowledge, escaped evidence, links, suggestions), and the
SMART app's pages and SVG charts."""
