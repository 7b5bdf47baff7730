"""Benchmarks that print DBP vs BP ratios measured in one process; the command line is
:mod:`mae_dbp.bench.cli` (``mae-dbp bench ...``)."""
