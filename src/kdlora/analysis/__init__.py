"""Efficiency analysis of a Table II CSV: parse and validate it, compute reductions and speedups, check the figures
for ones that cannot be right, and write the report (markdown, analysis.json, plots). Never imports torch."""
