"""Recipes (data) and named presets."""

from tfquant.recipes.presets import VARIANTS, variant
from tfquant.recipes.recipe import Recipe

__all__ = ["Recipe", "VARIANTS", "variant"]
