"""Compression: recipe steps (quantize, cast, prune, distill, ...), backends, and variants.

Importing this package registers every built-in step and backend.
"""

from wattwise.compress import registered  # noqa: F401  (side effect: registration)
