"""The shipped configs, installed as package data ``mae_dbp.configs`` (see setup.py)."""
