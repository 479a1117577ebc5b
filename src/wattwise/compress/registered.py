"""Imports every module that registers steps or backends, in one place."""

import importlib
import pkgutil
import sys

# Not `import wattwise.compress`: while the package initializes, that name would resolve to
# wattwise's lazy attribute lookup instead of the package itself.
_package = sys.modules["wattwise.compress"]

# Modules named steps_*.py register recipe steps; backend_*.py register backends.
for _info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
    if _info.name.startswith(("steps_", "backend_")):
        importlib.import_module(f"wattwise.compress.{_info.name}")
