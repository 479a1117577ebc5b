"""Compression: recipes of steps (`compress.steps`), the run that applies them, and variants.

Backends (where a variant runs) live in `wattwise.backends`.
"""
