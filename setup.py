"""Packaging that pyproject.toml alone cannot say: the top-level ``configs/`` folder ships inside the
package as ``mae_dbp.configs`` (package data), so a wheel / non-editable install has every config.
Everything else about the project is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["mae_dbp*", "segmentation*", "data_tools*"]) + ["mae_dbp.configs"],
    package_dir={"mae_dbp.configs": "configs"},
    package_data={"mae_dbp.configs": ["**/*.yaml", "**/*.py"]},
)
