"""Recipes (data), the named variants (recipes by name) and the input contract (inputs.py)."""

from tfquant.recipes.variants import VARIANTS, variant
from tfquant.recipes.recipe import Recipe

__all__ = ["Recipe", "VARIANTS", "variant"]
