"""The XLS-R-SQA head with per-layer head counts, FFN widths and a prunable attention-pool scorer.

``PrunableSqaHead`` computes exactly what :class:`sqa.models.heads.SqaHead` computes (it inherits
its forward pass); only its transformer layers are :class:`PrunableLayer` modules whose dims come
from :class:`PrunedHeadConfig`, and the pool's hidden layer has ``pool_hidden`` neurons.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import torch
from torch import Tensor, nn

from sqa.models.heads import SqaHead, sinusoid_positions
from sqa.training.pruning.layers import PrunableLayer, quiet_init
from sqa.training.pruning.units import TensorPlan, Units


@dataclass(frozen=True)
class LayerDims:
    """One kept transformer layer: its position in the unpruned model, heads, FFN neurons."""

    index: int
    heads: int
    ffn: int


@dataclass(frozen=True)
class PrunedHeadConfig:
    """Architecture of a ``PrunableSqaHead``; ``origin`` holds the unpruned sizes (for reports)."""

    dim_input: int
    dim_transformer: int
    head_dim: int
    layers: tuple[LayerDims, ...]
    pool_hidden: int
    feat_seq_len: int
    fusion: bool = False
    dropout: float = 0.0
    origin: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(
            layer if isinstance(layer, LayerDims) else LayerDims(**layer) for layer in self.layers))
        for name in ("dim_input", "dim_transformer", "head_dim", "feat_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PrunedHeadConfig.{name} must be a positive int, got {value!r}")
        if self.dim_transformer % 2:
            raise ValueError(f"PrunedHeadConfig.dim_transformer must be even, got {self.dim_transformer}")
        if not isinstance(self.pool_hidden, int) or self.pool_hidden < 0:
            raise ValueError(f"PrunedHeadConfig.pool_hidden must be an int >= 0, got {self.pool_hidden!r}")
        for i, layer in enumerate(self.layers):
            if min(layer.heads, layer.ffn, layer.index) < 0:
                raise ValueError(f"PrunedHeadConfig.layers[{i}] has a negative entry: {layer}")

    def to_dict(self) -> dict:
        return {"dim_input": self.dim_input, "dim_transformer": self.dim_transformer, "head_dim": self.head_dim,
                "layers": [vars(layer).copy() for layer in self.layers], "pool_hidden": self.pool_hidden,
                "feat_seq_len": self.feat_seq_len, "fusion": self.fusion, "dropout": self.dropout,
                "origin": dict(self.origin)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "PrunedHeadConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"PrunedHeadConfig.from_dict: unknown keys {unknown}; expected {sorted(known)}")
        return cls(**data)


class LayerStack(nn.Module):
    """Encoder layers applied in order."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class PrunablePool(nn.Module):
    """Attention pooling whose scorer has ``hidden`` prunable ReLU neurons."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, hidden)
        self.score = nn.Linear(hidden, 1)
        self.dropout = nn.Dropout(dropout)
        self.units = Units(hidden, "pool")

    def forward(self, x: Tensor) -> Tensor:
        h = self.units.scale(torch.relu(self.hidden(x)), -1)
        weights = torch.softmax(self.score(self.dropout(h)), dim=1)
        return (weights.transpose(1, 2) @ x).squeeze(1)


class PrunableSqaHead(SqaHead):
    """``SqaHead`` with per-layer dims (forward pass inherited)."""

    def __init__(self, config: PrunedHeadConfig) -> None:
        nn.Module.__init__(self)
        self.config = c = config
        self.input_norms = nn.ModuleList(nn.BatchNorm1d(c.dim_input) for _ in range(2 if c.fusion else 1))
        self.fuse = nn.Linear(2, 1) if c.fusion else None
        self.pre_norm = nn.BatchNorm1d(c.dim_input)
        self.proj = nn.Linear(c.dim_input, c.dim_transformer)
        self.proj_drop = nn.Dropout(c.dropout)
        with quiet_init():
            self.encoder = LayerStack([
                PrunableLayer(c.dim_transformer, layer.heads, c.head_dim, layer.ffn, norm_first=False, act="relu",
                              dropout=c.dropout, attn_dropout=c.dropout, act_dropout=c.dropout)
                for layer in c.layers])
            self.pool = PrunablePool(c.dim_transformer, c.pool_hidden, c.dropout)
        self.encoder_drop = nn.Dropout(c.dropout)
        self.post_norm = nn.BatchNorm1d(c.dim_transformer)
        self.readout = nn.Linear(c.dim_transformer, 1)
        self.register_buffer(
            "positions", sinusoid_positions(c.feat_seq_len, c.dim_transformer, 2 * c.feat_seq_len), persistent=False)

    def plan(self, prefix: str, input_group: str | None = None, input_block: int = 1) -> dict[str, TensorPlan]:
        """Tensor plan (names start with ``prefix``, which ends with a dot); ``input_group``: the
        group whose units make the input features, ``input_block`` features each."""
        out: dict[str, TensorPlan] = {}
        if input_group is not None:
            norms = [f"input_norms.{i}" for i in range(len(self.input_norms))] + ["pre_norm"]
            for norm in norms:
                for t in ("weight", "bias", "running_mean", "running_var"):
                    out[f"{prefix}{norm}.{t}"] = TensorPlan(((0, input_group, input_block),))
            out[f"{prefix}proj.weight"] = TensorPlan(((1, input_group, input_block),))
        for i, layer in enumerate(self.encoder.layers):
            out.update(layer.plan(f"{prefix}encoder.layers.{i}."))
        pool = f"{prefix}pool.units"
        out[f"{prefix}pool.hidden.weight"] = TensorPlan(((0, pool, 1),))
        out[f"{prefix}pool.hidden.bias"] = TensorPlan(((0, pool, 1),))
        out[f"{prefix}pool.score.weight"] = TensorPlan(((1, pool, 1),))
        return out

    def stacks(self, prefix: str) -> dict[str, list[str]]:
        layers = f"{prefix}encoder.layers"
        return {layers: [f"{layers}.{i}.gate" for i in range(len(self.encoder.layers))]}

    def config_for(self, keep: Mapping[str, Tensor], prefix: str, dim_input: int) -> PrunedHeadConfig:
        """The config after removal of everything not in ``keep``."""
        layers = tuple(
            LayerDims(dims.index, len(keep[f"{prefix}encoder.layers.{i}.attn.units"]),
                      len(keep[f"{prefix}encoder.layers.{i}.ffn.units"]))
            for i, dims in enumerate(self.config.layers) if len(keep[f"{prefix}encoder.layers.{i}.gate"]))
        return replace(self.config, dim_input=dim_input, layers=layers, pool_hidden=len(keep[f"{prefix}pool.units"]))

    def fold_removed_inputs(self, state: dict[str, Tensor], prefix: str, removed: Tensor) -> None:
        """Removed input features are zeros; in eval mode the norms map them to constants, whose
        contribution through ``proj`` is folded into its bias (so removal keeps the outputs)."""
        if not len(removed):
            return
        if self.config.fusion:
            raise ValueError("cannot remove input features of a fusion head")
        z = torch.zeros(len(removed), dtype=state[f"{prefix}proj.bias"].dtype)
        for norm in ("input_norms.0", "pre_norm"):
            p = {t: state[f"{prefix}{norm}.{t}"][removed] for t in ("weight", "bias", "running_mean", "running_var")}
            eps = (self.input_norms[0] if norm == "input_norms.0" else self.pre_norm).eps
            z = (z - p["running_mean"]) / torch.sqrt(p["running_var"] + eps) * p["weight"] + p["bias"]
        state[f"{prefix}proj.bias"] = state[f"{prefix}proj.bias"] + state[f"{prefix}proj.weight"][:, removed] @ z

    def unit_rows(self, part: str) -> list[dict]:
        """Kept vs. unpruned units per layer and kind (rows of ``kept_units``)."""
        origin, rows = self.config.origin, []
        by_index = {layer.index: layer for layer in self.config.layers}
        for i in range(origin.get("n_layers", len(self.config.layers))):
            layer = by_index.get(i)
            rows.append({"part": part, "layer": i, "kind": "heads", "kept": layer.heads if layer else 0,
                         "total": origin.get("heads"), "layer_kept": layer is not None})
            rows.append({"part": part, "layer": i, "kind": "ffn", "kept": layer.ffn if layer else 0,
                         "total": origin.get("ffn"), "layer_kept": layer is not None})
        rows.append({"part": part, "layer": 0, "kind": "pool", "kept": self.config.pool_hidden,
                     "total": origin.get("pool_hidden"), "layer_kept": True})
        return rows


def from_sqa_head(head: SqaHead) -> tuple[PrunableSqaHead, dict[str, Tensor]]:
    """The prunable equivalent of ``head`` and its state dict (same outputs)."""
    c = head.config
    d, h = c.dim_transformer, c.n_heads
    ffn = c.ff_mult * d
    config = PrunedHeadConfig(
        dim_input=c.dim_input, dim_transformer=d, head_dim=d // h,
        layers=tuple(LayerDims(i, h, ffn) for i in range(c.n_layers)), pool_hidden=2 * d,
        feat_seq_len=c.feat_seq_len, fusion=c.fusion, dropout=c.dropout,
        origin={"n_layers": c.n_layers, "heads": h, "ffn": ffn, "pool_hidden": 2 * d, "dim_input": c.dim_input})
    state = {}
    for name, t in head.state_dict().items():
        if not name.startswith("encoder.layers."):
            state[name] = t
            continue
        i, rest = name[len("encoder.layers."):].split(".", 1)
        p = f"encoder.layers.{i}."
        if rest in ("self_attn.in_proj_weight", "self_attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            for proj, part in zip(("q", "k", "v"), t.chunk(3, dim=0)):
                state[f"{p}attn.{proj}.{kind}"] = part
        else:
            rest = rest.replace("self_attn.out_proj.", "attn.out.").replace("linear1.", "ffn.fc1.")
            state[p + rest.replace("linear2.", "ffn.fc2.")] = t
    return PrunableSqaHead(config), state
