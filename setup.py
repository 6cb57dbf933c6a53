"""Which packages the wheel holds (everything else is in pyproject.toml).

The resources keep the design's top-level `resources/` folder but install as the package
`colorflow_resources` (read through importlib.resources), a renaming pyproject.toml's
`packages.find` cannot express; tests/, scripts/ and main.py stay out of the wheel.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["engine", "engine.*", "app", "app.*"]) + ["colorflow_resources"],
    package_dir={"colorflow_resources": "resources"},
    # listed by kind, so a resources/__pycache__ folder never ships
    package_data={"colorflow_resources": ["**/*.json", "**/*.md", "**/*.yaml"]},
)
