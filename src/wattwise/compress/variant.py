"""Variant directories: a compressed model saved with its recipe, hashes and profile.

Layout:
    variant.json       manifest: source model, recipe, backend, rebuild records, library
                       versions, sha256 and size of every file, creation time, profile
    model.safetensors  weights (eager / torch_compile backends), or model.onnx (onnxruntime)
    probe.safetensors  fixed test inputs and the outputs measured at compress time

`load_variant(path)` checks every hash first, then rebuilds the module through the backend.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from wattwise.backends import get_backend
from wattwise.compress import steps as registered_steps  # noqa: F401  (their rebuilders replay at load)
from wattwise.compress.context import CompressionRun, StepReport
from wattwise.compress.recipe import Recipe
from wattwise.errors import VariantIntegrityError
from wattwise.measure.flops import count_flops
from wattwise.measure.latency import TimingSettings
from wattwise.measure.profile import Profile, ProfileOverrides, profile_model
from wattwise.models.registry import LoadedModel, ModelOptions, load_architecture, load_model
from wattwise.paths import atomic_directory, atomic_write_text
from wattwise.tasks.base import forward_on_its_device

FORMAT_VERSION = 1
MANIFEST = "variant.json"
PROBE = "probe.safetensors"
PROBE_BATCH = 4
LIBRARIES = (
    "wattwise",
    "torch",
    "torchao",
    "torch-pruning",
    "onnx",
    "onnxruntime",
    "transformers",
    "numpy",
    "safetensors",
)


@dataclass
class Variant:
    """A saved variant: where it is, its manifest, profile (None when not profiled), per-step
    reports, and the runnable exported module it was saved from."""

    path: Path
    manifest: dict[str, Any]
    profile: Profile | None
    reports: list[StepReport] = field(default_factory=list)
    module: torch.nn.Module | None = None


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a variant depends on."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _probe(loaded_task, module: torch.nn.Module, directory: Path) -> None:
    inputs = loaded_task.example_inputs(PROBE_BATCH, "test")
    with torch.inference_mode():
        outputs = forward_on_its_device(module)(*inputs)
    tensors = {f"input_{i}": t.contiguous() for i, t in enumerate(inputs)}
    tensors["output"] = outputs.detach().contiguous()
    (directory / PROBE).write_bytes(save(tensors))


def save_variant(
    run: CompressionRun,
    recipe: Recipe,
    output: Path,
    batch_sizes: tuple[int, ...] = (1, 32),
    region: str | None = None,
    show_progress: bool = True,
    profile: bool = True,
    timing: TimingSettings = TimingSettings(),
    quality_split: str = "test",
) -> Variant:
    """Export `run.module` through the recipe's backend into `output`, atomically.

    The profile is taken with `timing` and scores quality on `quality_split` ("test" by
    default; the search passes "val" so the test split stays unseen until the final check).
    """
    source = run.context.source
    backend = get_backend(recipe.backend.name)
    with atomic_directory(Path(output)) as staging:
        exported = backend.export(run.module, run.context, run.deferred, staging)
        recipe = recipe.with_resolved(exported.resolved)
        deferred = [exported.resolved.get(id(step), step) for step in run.deferred]
        files = [*exported.files, PROBE]
        flops = count_flops(run.module, source.task.example_inputs(1, "test"))
        overrides: dict[str, Any] = {"notes": run.notes + exported.notes}
        if flops is not None:
            overrides["flops_per_sample"] = flops
            overrides["flops_note"] = (
                "torch.utils.flop_counter on the PyTorch model before export, batch of 1"
            )
        variant_model = LoadedModel(
            str(output), exported.module, source.task, "variant", source.spec
        )
        measured = None
        if profile:
            measured = profile_model(
                variant_model,
                batch_sizes,
                device=run.context.device,
                region=region,
                threads=recipe.backend.threads,
                timing=timing,
                quality_split=quality_split,
                show_progress=show_progress,
                overrides=ProfileOverrides.from_dict(overrides),
            )
        # The probe runs after the profile: a compiled backend then specializes its kernels to
        # the profiled batch shape first, as a server running one batch shape would.
        _probe(source.task, exported.module, staging)
        manifest = {
            "format": FORMAT_VERSION,
            "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source": {"kind": source.kind, **source.spec},
            "recipe": recipe.to_dict(),
            "recipe_text": recipe.describe(),
            "backend": recipe.backend.model_dump(),
            "backend_manifest": exported.manifest,
            "rebuild": run.rebuild,
            "deferred_steps": [s.to_yaml_dict() for s in deferred],
            "notes": overrides["notes"],
            "profile_overrides": overrides,
            "files": {
                name: {
                    "sha256": sha256_file(staging / name),
                    "bytes": (staging / name).stat().st_size,
                }
                for name in files
            },
            "versions": library_versions(),
            "step_reports": [_report_dict(r) for r in run.reports],
            "profile": measured.to_dict() if measured else None,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    relocate = getattr(exported.module, "relocate", None)
    if relocate is not None:  # a module that reads its files (ONNX) follows them into place
        relocate(Path(output))
    return Variant(Path(output), manifest, measured, run.reports, exported.module)


def record_profile(directory: Path, profile: Profile, chosen_by: str | None = None) -> None:
    """Store `profile` in a variant's manifest (atomically; the hashed files are unchanged)."""
    manifest = read_manifest(directory)
    manifest["profile"] = profile.to_dict()
    if chosen_by:
        manifest["chosen_by"] = chosen_by
    atomic_write_text(Path(directory) / MANIFEST, json.dumps(manifest, indent=2, default=str))


def copy_variant(
    source: Path,
    destination: Path,
    profile: Profile | None = None,
    marker: str | None = None,
) -> None:
    """Copy a variant directory to `destination` atomically (replacing what was there).

    With `profile`, the copy's manifest records it as the profile that chose it (the hashed
    files are unchanged); `marker` is written to `.candidate` (the search's bookkeeping).
    """
    with atomic_directory(Path(destination)) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        if profile is not None:
            record_profile(
                staging,
                profile,
                chosen_by="wattwise optimize (quality confirmed on the held-out test split)",
            )
        if marker is not None:
            (staging / ".candidate").write_text(marker)


def _report_dict(report: StepReport) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(report)


def read_manifest(path: Path) -> dict[str, Any]:
    """Parse variant.json; a missing or broken manifest raises VariantIntegrityError."""
    manifest_path = Path(path) / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError as error:
        raise VariantIntegrityError(
            f"{path} has no {MANIFEST}; pass a directory written by wattwise compress"
        ) from error
    except json.JSONDecodeError as error:
        raise VariantIntegrityError(
            f"{manifest_path} is not valid JSON; recreate the variant"
        ) from error
    if not isinstance(manifest, dict):
        raise VariantIntegrityError(f"{manifest_path} is not a JSON object; recreate the variant")
    if manifest.get("format") != FORMAT_VERSION:
        raise VariantIntegrityError(
            f"{path}: variant format {manifest.get('format')} is not {FORMAT_VERSION}; recreate it"
        )
    files, backend = manifest.get("files"), manifest.get("backend")
    if not isinstance(files, dict) or not isinstance(backend, dict) or "name" not in backend:
        raise VariantIntegrityError(
            f"{manifest_path} lacks its 'files' or 'backend' record; recreate the variant"
        )
    return manifest


def verify_files(path: Path, manifest: dict[str, Any]) -> None:
    """Check every listed file's size and sha256; raise VariantIntegrityError on a mismatch."""
    for name, expected in manifest["files"].items():
        file = Path(path) / name
        if not isinstance(expected, dict) or not {"bytes", "sha256"} <= expected.keys():
            raise VariantIntegrityError(
                f"{MANIFEST} in {path} has no size/sha256 for {name}; recreate the variant"
            )
        if not file.is_file():
            raise VariantIntegrityError(f"variant file {file} is missing; recreate the variant")
        if file.stat().st_size != expected["bytes"] or sha256_file(file) != expected["sha256"]:
            raise VariantIntegrityError(
                f"variant file {file} does not match its sha256 in {MANIFEST} (changed or "
                "truncated); recreate the variant or restore the file"
            )


def load_variant(
    path: str | Path,
    check_outputs: bool = False,
    serving_only: bool = False,
    trust_code: bool = False,
) -> LoadedModel:
    """A runnable model from a variant directory, after verifying every file's hash.

    With `check_outputs`, also re-runs the saved probe inputs and requires bit-identical outputs.
    With `serving_only`, the source model is built without its trained weights
    (`load_architecture`), or not at all when the backend's file is the whole model (ONNX
    Runtime): what a server replica loads; the task can feed, not score, a text model.
    A variant made from a `module:factory` model imports that module to rebuild it: refused
    unless `trust_code` (the CLI's `--trust-code`), since anyone can write a variant.json.
    Example:
        loaded = wattwise.load_variant("out/"); loaded.module(*loaded.task.example_inputs(8))
    """
    path = Path(path)
    manifest = read_manifest(path)
    verify_files(path, manifest)
    source_record, source_kind, spec = _source_of(path, manifest, trust_code)
    try:
        options = ModelOptions(**source_record, trust_code=trust_code)
    except TypeError as error:
        raise VariantIntegrityError(
            f"{path / MANIFEST} has an unknown source field ({error}); recreate the variant"
        ) from error
    backend = get_backend(manifest["backend"]["name"])
    if serving_only:
        source = load_architecture(spec, options, with_module=backend.needs_source_module)
    else:
        source = load_model(spec, options)
    try:
        module = backend.load(path, manifest, source).eval()
    except (KeyError, TypeError, IndexError) as error:
        # A hand-edited or damaged variant.json (a record missing or of the wrong type).
        raise VariantIntegrityError(
            f"{path / MANIFEST} has a damaged record ({type(error).__name__}: {error}); "
            "recreate the variant"
        ) from error
    loaded = LoadedModel(
        str(path),
        module,
        source.task,
        "variant",
        {"spec": spec, "kind": source_kind, **source_record},
        {"manifest": manifest, **{k: v for k, v in source.extra.items() if k == "tokenizer"}},
    )
    if check_outputs:
        outputs_match_probe(loaded, path)
    return loaded


def is_variant_directory(spec: str | Path) -> bool:
    """Whether `spec` names a variant directory (one holding variant.json)."""
    path = Path(spec)
    return path.is_dir() and (path / MANIFEST).is_file()


def open_model(
    spec: str | LoadedModel, options: ModelOptions | None = None, serving_only: bool = False
) -> LoadedModel:
    """Any model spec, a variant directory included: the one loader for callers that may get
    a variant (the CLI, the API, the server, the search).

    `serving_only=True` loads only what running the model needs (a server replica): a
    variant's source is built without its trained weights and no reference copy is made.
    Example:
        loaded = wattwise.open_model("report/variant")
    """
    if isinstance(spec, LoadedModel):
        return spec
    if is_variant_directory(spec):
        trust_code = bool(options and options.trust_code)
        return load_variant(spec, serving_only=serving_only, trust_code=trust_code)
    return load_model(spec, options, serving_only)


def profile_overrides(loaded: LoadedModel) -> ProfileOverrides | None:
    """What a variant measured at export (FLOPs before export, notes), for `profile_model`."""
    manifest = loaded.extra.get("manifest") if loaded.kind == "variant" else None
    if not manifest:
        return None
    return ProfileOverrides.from_dict(manifest.get("profile_overrides", {}))


def _source_of(path: Path, manifest: dict[str, Any], trust_code: bool):
    """(options record, kind, spec) of the variant's source; refuses untrusted factory code."""
    from wattwise.errors import UntrustedCodeError
    from wattwise.models.factory import is_factory_spec

    record = manifest.get("source")
    if not isinstance(record, dict) or not isinstance(record.get("spec"), str):
        raise VariantIntegrityError(
            f"{path / MANIFEST} has no source model spec; recreate the variant"
        )
    record = dict(record)
    kind, spec = record.pop("kind", None), record.pop("spec")
    if (kind == "factory" or is_factory_spec(spec)) and not trust_code:
        raise UntrustedCodeError(
            f"variant {path} is built from the Python factory {spec!r}: loading it imports and "
            "runs that code; pass --trust-code (trust_code=True in Python) only if you trust "
            "where this variant came from"
        )
    return record, kind, spec


def outputs_match_probe(loaded: LoadedModel, path: Path) -> None:
    """Re-run the probe inputs saved at compress time; raise unless outputs are identical."""
    probe = load_file(str(Path(path) / PROBE))
    inputs = tuple(probe[f"input_{i}"] for i in range(len(probe) - 1))
    with torch.inference_mode():
        outputs = forward_on_its_device(loaded.module)(*inputs)
    if not torch.equal(outputs.to(probe["output"].dtype), probe["output"]):
        difference = float((outputs.float() - probe["output"].float()).abs().max())
        raise VariantIntegrityError(
            f"variant {path} outputs differ from those measured at compress time (max abs "
            f"difference {difference:.3g}); recreate it with this wattwise and library versions"
        )
