"""Candidates to try: families of recipes ordered from mildest to most aggressive.

A family stops early when a milder member already breaks the budget. Families are ordered by
a prior (likely gain per second of evaluation), so cheap, likely-good candidates come first.
The default space depends on the model's task and the device's ISA; a user's YAML replaces it:

    families:
      - name: ort-int8
        candidates:
          - {steps: [{quantize: {method: int8_dynamic, granularity: per_channel}}], backend: onnxruntime}
          - {steps: [{quantize: {method: int8_dynamic, granularity: per_tensor}}], backend: onnxruntime}
    peers: true
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattwise.compress.recipe import Recipe
from wattwise.config_files import read_yaml
from wattwise.errors import ConfigError, WattwiseError


@dataclass(frozen=True)
class Candidate:
    """One recipe to measure.

    Attributes:
        id: stable hash of the recipe (same recipe → same id, so --resume can skip it).
        family: the family it belongs to; `level` is its rank in it (0 = mildest).
        recipe: the parsed recipe (`recipe.to_dict()` is its YAML-shaped mapping).
        peer: set for a peer library's one-call default ("onnxruntime quantize_dynamic", ...).
        note: why it is here or how it was ordered (e.g. "known slow without VNNI").
    """

    id: str
    family: str
    level: int
    recipe: Recipe
    label: str
    peer: str = ""
    note: str = ""


def candidate_id(recipe: dict[str, Any]) -> str:
    """Short stable hash of a recipe mapping."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def make_candidate(
    family: str, level: int, recipe: dict[str, Any], peer: str = "", note: str = ""
) -> Candidate:
    """Validate a recipe mapping and wrap it as a Candidate."""
    parsed = Recipe.from_dict(recipe)
    return Candidate(
        id=candidate_id(parsed.to_dict()),
        family=family,
        level=level,
        recipe=parsed,
        label=parsed.describe(),
        peer=peer,
        note=note,
    )


@dataclass
class SearchSpace:
    """Ordered families of candidates plus the peers to measure alongside."""

    families: list[tuple[str, list[Candidate]]] = field(default_factory=list)
    peers: list[Candidate] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add_family(self, name: str, recipes: list[dict[str, Any]], note: str = "") -> None:
        """Add a family, skipping recipes this installation cannot parse (and saying so)."""
        members = []
        for recipe in recipes:
            try:
                members.append(make_candidate(name, len(members), recipe, note=note))
            except WattwiseError as error:
                self.skipped.append(f"{name}: {error}")
        if members:
            self.families.append((name, members))

    def add_peer(self, peer: str, recipe: dict[str, Any]) -> None:
        """Add a peer library's one-call default."""
        try:
            self.peers.append(make_candidate("peers", len(self.peers), recipe, peer=peer))
        except WattwiseError as error:
            self.skipped.append(f"peer {peer}: {error}")

    def ordered(self) -> list[Candidate]:
        """Peers first (cheap, and the user wants them compared), then families in order;
        a candidate already present (same id) is listed once."""
        seen: set[str] = set()
        ordered = []
        for candidate in [*self.peers, *(c for _, members in self.families for c in members)]:
            if candidate.id not in seen:
                seen.add(candidate.id)
                ordered.append(candidate)
        return ordered


def load_space_yaml(path: str | Path) -> SearchSpace:
    """A user's search space file (see module docstring)."""
    data = read_yaml(path, "search space file")
    if not isinstance(data, dict) or "families" not in data:
        raise ConfigError(
            f"search space {path} needs a 'families' list (see wattwise optimize --help)"
        )
    unknown = set(data) - {"families", "peers"}
    if unknown:
        raise ConfigError(
            f"unknown search space field(s) {', '.join(sorted(unknown))}: allowed are families, peers"
        )
    if not isinstance(data["families"], list):
        raise ConfigError(f"search space {path}: 'families' must be a list of families")
    space = SearchSpace()
    for family in data["families"]:
        if not isinstance(family, dict) or not isinstance(family.get("candidates"), list):
            raise ConfigError("each family needs 'name' and a 'candidates' list of recipes")
        name = str(family.get("name", f"family-{len(space.families)}"))
        members = [make_candidate(name, i, recipe) for i, recipe in enumerate(family["candidates"])]
        space.families.append((name, members))
    if data.get("peers", True):
        add_default_peers(space)
    return space


def add_default_peers(space: SearchSpace) -> None:
    """The three peers' one-call defaults, as recipes of wattwise steps that call them."""
    space.add_peer(
        "torch.ao.quantization.quantize_dynamic (default)",
        {
            "steps": [
                {
                    "quantize": {
                        "method": "int8_dynamic",
                        "granularity": "per_tensor",
                        "implementation": "torch_ao",
                    }
                }
            ],
            "backend": "eager",
        },
    )
    space.add_peer(
        "torchao Int8DynamicActivationInt8WeightConfig() (default)",
        {
            "steps": [
                {
                    "quantize": {
                        "method": "int8_dynamic",
                        "granularity": "per_channel",
                        "implementation": "torchao",
                    }
                }
            ],
            "backend": "eager",
        },
    )
    space.add_peer(
        "onnxruntime.quantization.quantize_dynamic (default)",
        {
            "steps": [
                {
                    "quantize": {
                        "method": "int8_dynamic",
                        "granularity": "per_tensor",
                        "implementation": "onnxruntime",
                    }
                }
            ],
            "backend": "onnxruntime",
        },
    )
