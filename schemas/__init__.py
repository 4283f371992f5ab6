"""Pydantic models of the recipe DSL, one module per domain."""

from schemas.recipe import Recipe

__all__ = ["Recipe"]
