"""The `recipe` runner: load, check, plan, train and render from one YAML recipe."""

__version__ = "0.1.0"
