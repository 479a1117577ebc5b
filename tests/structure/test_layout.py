"""The code's shape: no import cycles, no private names across modules, layers one way, small
modules. Read from the source with `ast`, lazy imports inside functions included."""

from __future__ import annotations

from tests.structure.imports import import_cycles, import_edges, module_files

# Low to high: a module may import its own layer and those below it, never above.
LAYERS = [
    {"errors", "paths", "durations", "config_files", "progress", "data"},
    {"tasks"},
    {"fit"},
    {"models"},
    {"measure"},
    {"backends", "compress"},
    {"search", "train", "serve"},
    {"federate"},
    {"schedule", "batch", "sweep", "advise"},
    {"report"},
    {"api", "cli", ""},
]
MAX_MODULE_LINES = 400


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> int:
    area = _area(module)
    for index, members in enumerate(LAYERS):
        if area in members:
            return index
    raise AssertionError(f"area {area!r} of {module} is in no layer: add it to LAYERS")


def test_no_import_cycles_between_modules():
    cycles = import_cycles(import_edges())
    assert not cycles, "import cycles (lazy imports count): " + "; ".join(
        " → ".join(group) for group in cycles
    )


def test_no_module_imports_another_modules_private_names():
    private = [
        f"{edge.importer}:{edge.line} takes {name} from {edge.imported}"
        for edge in import_edges()
        for name in edge.names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not private, "\n".join(private)


def test_imports_run_down_the_layers():
    upward = [
        f"{edge.importer}:{edge.line} imports {edge.imported}"
        for edge in import_edges()
        if _layer(edge.imported) > _layer(edge.importer)
    ]
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_every_module_is_small():
    too_long = {
        name: lines
        for name, path in module_files().items()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def test_every_registering_module_is_imported_by_its_package():
    """Adding a step is one module in compress/steps/ and one line in its __init__.py: no
    discovery by file name, so a module that registers must be named there."""
    from pathlib import Path

    import wattwise.backends
    import wattwise.compress.steps

    for package, decorator in (
        (wattwise.compress.steps, "@register_step("),
        (wattwise.backends, "@register_backend("),
    ):
        folder = Path(package.__file__).parent
        init = (folder / "__init__.py").read_text()
        assert "pkgutil" not in init and "import_module" not in init
        registering = {p.stem for p in folder.glob("*.py") if f"\n{decorator}" in p.read_text()}
        missing = {
            name
            for name in registering
            if f"    {name},\n" not in init
            and f" {name}, " not in init
            and f" {name}  #" not in init
        }
        assert not missing, f"{package.__name__}/__init__.py does not import {sorted(missing)}"
