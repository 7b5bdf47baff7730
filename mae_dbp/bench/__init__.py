"""Benchmarks that print DBP vs BP ratios measured in one process; the command line is
:mod:`mae_dbp.commands.bench` (``mae-dbp bench ...``)."""
