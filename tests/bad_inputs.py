"""Bad files shared by the bad-input tables (CLI, Python API, HTTP): made once per session.

`make_bad_files(root)` writes every broken data file, recipe, space and variant the tables
name, and returns a dict name → path. Variants come from one real digits-cnn variant and one
real `tests.helpers:linear_stack` variant, copied and then damaged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from wattwise.paths import atomic_write_text

DIGIT_FEATURES = 64  # digits-cnn takes 1×8×8 inputs


def _digits_rows(count: int = 30, features: int = DIGIT_FEATURES, classes: int = 10):
    generator = np.random.default_rng(0)
    inputs = generator.random((count, features)).astype(np.float32)
    labels = np.arange(count) % classes
    return inputs, labels


def _write_csv(path: Path, inputs, labels, cells: dict[tuple[int, int], str] | None = None):
    header = [f"p{i}" for i in range(inputs.shape[1])] + ["label"]
    lines = [",".join(header)]
    for row, (values, label) in enumerate(zip(inputs, labels, strict=True)):
        texts = [f"{v:.4f}" for v in values] + [str(label)]
        for (cell_row, cell_column), text in (cells or {}).items():
            if cell_row == row:
                texts[cell_column] = text
        lines.append(",".join(texts))
    path.write_text("\n".join(lines) + "\n")
    return path


def _data_files(root: Path) -> dict[str, Path]:
    inputs, labels = _digits_rows()
    files = {}
    for name in ("empty.csv", "empty.jsonl", "empty.npz"):
        files[name] = root / name
        files[name].write_bytes(b"")
    files["header-only.csv"] = root / "header-only.csv"
    files["header-only.csv"].write_text("p0,p1,label\n")
    files["good.csv"] = _write_csv(root / "good.csv", inputs, labels)
    files["nan.csv"] = _write_csv(root / "nan.csv", inputs, labels, {(3, 5): "nan"})
    files["inf.csv"] = _write_csv(root / "inf.csv", inputs, labels, {(7, 2): "inf"})
    files["text.csv"] = _write_csv(root / "text.csv", inputs, labels, {(4, 1): "abc"})
    files["blank-cell.csv"] = _write_csv(root / "blank.csv", inputs, labels, {(2, 0): ""})
    files["nan-label.csv"] = _write_csv(root / "nan-label.csv", inputs, labels, {(5, 64): "nan"})
    files["one-class.csv"] = _write_csv(root / "one-class.csv", inputs, np.ones(30, dtype=int))
    files["label-12.csv"] = _write_csv(root / "label-12.csv", inputs, labels, {(6, 64): "12"})
    files["label-neg.csv"] = _write_csv(root / "label-neg.csv", inputs, labels, {(6, 64): "-1"})
    files["label-half.csv"] = _write_csv(root / "label-half.csv", inputs, labels, {(6, 64): "1.5"})
    few_inputs, few_labels = _digits_rows(count=5)
    files["few.csv"] = _write_csv(root / "few.csv", few_inputs, few_labels)
    narrow, narrow_labels = _digits_rows(features=5)
    files["narrow.csv"] = _write_csv(root / "narrow.csv", narrow, narrow_labels)
    files["binary.csv"] = root / "binary.csv"
    files["binary.csv"].write_bytes(b"\xff\xfe\x00\x81" * 50)
    files["strings.npz"] = root / "strings.npz"
    np.savez(files["strings.npz"], inputs=np.array([["a"] * 64] * 30), labels=labels)
    files["nan.npz"] = root / "nan.npz"
    bad = inputs.copy()
    bad[4, 9] = np.nan
    np.savez(files["nan.npz"], inputs=bad, labels=labels)
    files["inf-label.npz"] = root / "inf-label.npz"
    np.savez(files["inf-label.npz"], inputs=inputs, labels=np.where(labels == 3, np.inf, labels))
    files["no-inputs.npz"] = root / "no-inputs.npz"
    np.savez(files["no-inputs.npz"], features=inputs)
    files["label-count.npz"] = root / "label-count.npz"
    np.savez(files["label-count.npz"], inputs=inputs, labels=labels[:20])
    files["corrupt.npz"] = root / "corrupt.npz"
    files["corrupt.npz"].write_bytes(b"PK\x03\x04 not really a zip")
    files["nan.jsonl"] = root / "nan.jsonl"
    rows = [
        {"input": v.tolist(), "label": int(label)} for v, label in zip(inputs, labels, strict=True)
    ]
    rows_nan = [dict(r) for r in rows]
    rows_nan[8]["input"] = [float("nan"), *rows_nan[8]["input"][1:]]
    files["nan.jsonl"].write_text("\n".join(json.dumps(r) for r in rows_nan) + "\n")
    files["ragged.jsonl"] = root / "ragged.jsonl"
    rows_ragged = [dict(r) for r in rows]
    rows_ragged[2]["input"] = [1.0, 2.0]
    files["ragged.jsonl"].write_text("\n".join(json.dumps(r) for r in rows_ragged) + "\n")
    files["not-json.jsonl"] = root / "not-json.jsonl"
    files["not-json.jsonl"].write_text("{this is not json\n")
    files["data.txt"] = root / "data.txt"
    files["data.txt"].write_text("1 2 3\n")
    return files


def _recipe_files(root: Path) -> dict[str, Path]:
    recipes = {
        "twice.yaml": "steps:\n  - prune: {method: unstructured, sparsity: 0.3}\n"
        "  - prune: {method: unstructured, sparsity: 0.5}\nbackend: eager\n",
        "two-casts.yaml": "steps:\n  - cast: {method: bf16}\n  - cast: {method: fp16}\n",
        "unknown-step.yaml": "steps:\n  - shrink: {factor: 2}\n",
        "unknown-field.yaml": "steps: []\nflavour: mint\n",
        "bad-sparsity.yaml": "steps:\n  - prune: {method: unstructured, sparsity: 1.5}\n",
        "not-yaml.yaml": "steps: [unclosed\n",
        "list.yaml": "- cast\n- prune\n",
        "bad-backend.yaml": "steps: []\nbackend: warp-drive\n",
        "cast.yaml": "steps:\n  - cast: {method: bf16}\nbackend: eager\n",
        "space-bad.yaml": "families: 7\n",
        "space-one.yaml": "families:\n  - name: c\n    candidates:\n"
        "      - {steps: [{cast: {method: bf16}}], backend: eager}\npeers: false\n",
    }
    files = {}
    for name, text in recipes.items():
        files[name] = root / name
        files[name].write_text(text)
    return files


def _damaged_variants(root: Path, digits: Path, stack: Path) -> dict[str, Path]:
    files = {"variant": digits, "factory-variant": stack}

    def copy(name: str) -> Path:
        target = root / name
        shutil.copytree(digits, target)
        files[name] = target
        return target

    (copy("no-manifest") / "variant.json").unlink()
    (copy("manifest-not-json") / "variant.json").write_text("{not json")
    (copy("manifest-list") / "variant.json").write_text("[1, 2, 3]")
    manifest = json.loads((digits / "variant.json").read_text())
    no_files = {k: v for k, v in manifest.items() if k != "files"}
    atomic_write_text(copy("manifest-no-files") / "variant.json", json.dumps(no_files))
    wrong_format = {**manifest, "format": 99}
    atomic_write_text(copy("manifest-format") / "variant.json", json.dumps(wrong_format))
    no_source = {**manifest, "source": {"kind": "builtin"}}
    atomic_write_text(copy("manifest-no-source") / "variant.json", json.dumps(no_source))
    weights = "model.safetensors"
    swapped = copy("weights-swapped")
    shutil.copy(stack / weights, swapped / weights)
    rehashed = copy("weights-swapped-rehashed")
    shutil.copy(stack / weights, rehashed / weights)
    from wattwise.compress.variant import sha256_file

    manifest_rehashed = json.loads((rehashed / "variant.json").read_text())
    manifest_rehashed["files"][weights] = {
        "sha256": sha256_file(rehashed / weights),
        "bytes": (rehashed / weights).stat().st_size,
    }
    atomic_write_text(rehashed / "variant.json", json.dumps(manifest_rehashed))
    (copy("weights-missing") / weights).unlink()
    truncated = copy("weights-truncated")
    data = (truncated / weights).read_bytes()
    (truncated / weights).write_bytes(data[: len(data) // 2])
    return files


def make_bad_files(root: Path) -> dict[str, Path]:
    """Every bad input the tables use, under `root`; see the module docstring."""
    import torch
    from safetensors.torch import save_file

    import wattwise.api
    from tests.helpers import linear_stack
    from wattwise.models.registry import ModelOptions

    root = Path(root)
    files = {**_data_files(root), **_recipe_files(root)}
    recipe = files["cast.yaml"]
    digits = wattwise.api.compress(
        "digits-cnn", str(recipe), root / "digits-variant", batch_sizes=(1,), show_progress=False
    )
    stack = wattwise.api.compress(
        "tests.helpers:linear_stack",
        str(recipe),
        root / "stack-variant",
        batch_sizes=(1,),
        show_progress=False,
        options=ModelOptions(input_shape="64"),
    )
    files.update(_damaged_variants(root, digits.path, stack.path))
    state = {k: v.contiguous() for k, v in linear_stack().state_dict().items()}
    files["stack.safetensors"] = root / "stack.safetensors"
    save_file(state, str(files["stack.safetensors"]))
    files["corrupt.safetensors"] = root / "corrupt.safetensors"
    files["corrupt.safetensors"].write_bytes(b"not safetensors at all")
    files["other-model.safetensors"] = root / "other-model.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(files["other-model.safetensors"]))
    files["a-file"] = root / "a-file"
    files["a-file"].write_text("a file where a directory is expected")
    files["broken.onnx"] = root / "broken.onnx"
    files["broken.onnx"].write_bytes(b"\x08\x07garbage")
    return files
