"""Layer sequence and layer categories of a model type (profiles/architectures/<model_type>.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmsim.perf.errors import ProfileError

# A layer listed under several catalog sections takes the first of these (reference order).
_CATEGORY_ORDER = ("per_sequence", "attention", "moe", "dense")


@dataclass(frozen=True)
class Architecture:
    name: str
    prologue: tuple[str, ...]
    pre_attn: tuple[str, ...]
    post_attn: tuple[str, ...]
    mlp_dense: tuple[str, ...]
    head: tuple[str, ...]
    category: dict[str, str] = field(hash=False)  # layer -> dense|per_sequence|attention|moe
    tp_stable: frozenset[str] = frozenset()
    mlp_moe: tuple[str, ...] = ()

    @property
    def block_layers(self) -> tuple[str, ...]:
        # mlp_moe is empty for dense models and mlp_dense empty for MoE ones.
        return self.pre_attn + self.post_attn + self.mlp_dense + self.mlp_moe


def available_architectures(profiles_root: Path) -> list[str]:
    return sorted(p.stem for p in (Path(profiles_root) / "architectures").glob("*.yaml"))


def load_architecture(profiles_root: Path, model_type: str) -> Architecture:
    path = Path(profiles_root) / "architectures" / f"{model_type}.yaml"
    if not path.is_file():
        have = ", ".join(available_architectures(profiles_root)) or "none"
        raise ProfileError(f"architecture file not found: {path} (available: {have})")
    with open(path) as f:
        doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    seq, catalog = doc.get("sequence"), doc.get("catalog")
    if not isinstance(seq, dict) or not isinstance(catalog, dict):
        raise ProfileError(f"{path}: must define both 'sequence' and 'catalog'")

    category: dict[str, str] = {}
    tp_stable = set()
    for cat in _CATEGORY_ORDER:
        for layer, entry in (catalog.get(cat) or {}).items():
            category.setdefault(layer, cat)
            if isinstance(entry, dict) and entry.get("tp_stable"):
                tp_stable.add(layer)

    def section(name: str) -> tuple[str, ...]:
        layers = tuple(seq.get(name) or ())
        unknown = [l for l in layers if l not in category]
        if unknown:
            raise ProfileError(f"{path}: sequence.{name} lists {', '.join(unknown)} absent from catalog")
        return layers

    return Architecture(
        name=model_type,
        prologue=section("prologue"),
        pre_attn=section("pre_attn"),
        post_attn=section("post_attn"),
        mlp_dense=section("mlp_dense"),
        head=section("head"),
        category=category,
        tp_stable=frozenset(tp_stable),
        mlp_moe=section("mlp_moe"),
    )
