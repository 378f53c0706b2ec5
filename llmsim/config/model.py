"""Model architecture facts from a Hugging Face config.json."""
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ._fields import Fields, parse_json, read_config_bytes
from .moe import MoeSpec, parse_moe, refuse_unmodelled_attention


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    torch_dtype: str | None
    tie_word_embeddings: bool
    moe: MoeSpec | None = None  # None: a dense decoder (every layer's MLP is intermediate_size wide)

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim


def load_model_spec(model_dir: Path, name: str) -> ModelSpec:
    path = model_dir / f"{name}.json"
    if not path.is_file():
        have = sorted(str(p.relative_to(model_dir))[:-5] for p in model_dir.glob("*/*.json"))
        raise InputError(f"{path}: model config not found (models available: {', '.join(have) or 'none'})")
    raw = parse_json(str(path), read_config_bytes(str(path), "model config"))
    f = Fields(str(path), raw, "")
    refuse_unmodelled_attention(f, raw)
    hidden = f.get("hidden_size", int, minimum=1)
    heads = f.get("num_attention_heads", int, minimum=1)
    head_dim = raw.get("head_dim") or hidden // heads
    inter = raw.get("intermediate_size", raw.get("ffn_dim"))
    if not isinstance(inter, int) or inter < 1:
        f.fail("expected a positive integer intermediate_size (or ffn_dim)", "intermediate_size")
    model_type = f.get("model_type", str)  # read in the same order as before: the same first error
    num_layers = f.get("num_hidden_layers", int, minimum=1)
    return ModelSpec(
        name=name,
        model_type=model_type,
        hidden_size=hidden,
        num_layers=num_layers,
        num_heads=heads,
        num_kv_heads=f.get("num_key_value_heads", int, heads, minimum=1),
        head_dim=int(head_dim),
        intermediate_size=inter,
        vocab_size=f.get("vocab_size", int, minimum=1),
        max_position_embeddings=f.get("max_position_embeddings", int, minimum=1),
        torch_dtype=raw.get("torch_dtype"),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        moe=parse_moe(f, raw, num_layers),
    )
