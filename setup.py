"""Packaging beyond what pyproject.toml can say: the catalogue travels inside the wheel.

The top-level `pipelines/` and `tasks/` stay the one copy users read and edit; setuptools maps them onto
`ragbench.catalog_data.pipelines` and `ragbench.catalog_data.tasks`, so an installed package finds its shipped
pipelines and task cards by name (ragbench/catalog.py). pyproject's `packages.find` cannot add mapped packages.
"""

from setuptools import find_namespace_packages, setup

CATALOG = {"ragbench.catalog_data.pipelines": "pipelines", "ragbench.catalog_data.tasks": "tasks"}

setup(
    packages=find_namespace_packages(include=["ragbench*"]) + list(CATALOG),
    package_dir=CATALOG,
    package_data={"ragbench": ["data/**/*"], **{package: ["*.yaml"] for package in CATALOG}},
)
