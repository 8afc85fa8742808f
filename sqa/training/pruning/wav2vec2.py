"""The XLS-R teacher, prunable: arch ``pruned-xlsr-teacher``.

transformers' ``Wav2Vec2Model`` cannot hold a different head count or FFN width per layer (and
has no ``prune_heads``), so the teacher's truncated encoder is re-expressed here with its own
modules (same numerics as transformers, inference; SpecAugment and LayerDrop are not
re-implemented) and converted from an :class:`~sqa.models.teacher.XlsrTeacher` by
:func:`from_teacher`. The checkpoint needs neither transformers nor the hub.

Units: the feature encoder's conv channels (a "layer" norm over channels normalises over the
kept channels only while masked, so masking equals removal), the heads and FFN neurons of every
encoder block, whole blocks, and the head's units (:mod:`sqa.training.pruning.head`). The head reads the
output of block ``L`` of the unpruned model: after removal of blocks, the output of the last kept
block numbered ``<= L``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Mapping

import torch
from torch import Tensor, nn

from sqa.models import checkpoint, count_params
from sqa.models.heads import crop_features
from sqa.models.teacher import FeaturesAndHead, XlsrTeacher
from sqa.training.pruning.head import PrunableSqaHead, PrunedHeadConfig, from_sqa_head
from sqa.training.pruning.layers import PrunableLayer, activation, quiet_init
from sqa.training.pruning.units import TensorPlan, Units

ARCH = "pruned-xlsr-teacher"


@dataclass(frozen=True)
class ConvDims:
    channels: int
    kernel: int
    stride: int


@dataclass(frozen=True)
class BlockDims:
    """A kept encoder block: its number in the unpruned model (1-based), heads, FFN neurons."""

    block: int
    heads: int
    ffn: int


@dataclass(frozen=True)
class EncoderConfig:
    """A (pruned) wav2vec 2.0 encoder truncated after its highest read block."""

    conv: tuple[ConvDims, ...]
    conv_bias: bool
    conv_norm: str  # "layer" (XLS-R) or "group" (first layer only, wav2vec 2.0 base)
    conv_act: str
    hidden_size: int
    head_dim: int
    blocks: tuple[BlockDims, ...]
    read_layers: tuple[int, ...]
    stable_layer_norm: bool
    hidden_act: str
    layer_norm_eps: float = 1e-5
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    feat_proj_dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv", tuple(c if isinstance(c, ConvDims) else ConvDims(**c) for c in self.conv))
        object.__setattr__(self, "blocks", tuple(b if isinstance(b, BlockDims) else BlockDims(**b)
                                                 for b in self.blocks))
        object.__setattr__(self, "read_layers", tuple(self.read_layers))
        if self.conv_norm not in ("layer", "group"):
            raise ValueError(f"EncoderConfig.conv_norm must be 'layer' or 'group', got {self.conv_norm!r}")
        activation(self.conv_act)
        activation(self.hidden_act)
        if not self.conv or any(c.channels < 1 for c in self.conv):
            raise ValueError(f"EncoderConfig.conv needs >= 1 layer with >= 1 channel each, got {self.conv}")
        if not self.read_layers or min(self.read_layers) < 0:
            raise ValueError(f"EncoderConfig.read_layers must be block numbers >= 0, got {self.read_layers}")
        numbers = [b.block for b in self.blocks]
        if numbers != sorted(set(numbers)) or (numbers and (numbers[0] < 1 or numbers[-1] > max(self.read_layers))):
            raise ValueError(f"EncoderConfig.blocks must be increasing block numbers in 1..{max(self.read_layers)}, "
                             f"got {numbers}")

    @classmethod
    def from_dict(cls, data: Mapping) -> "EncoderConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"EncoderConfig.from_dict: unknown keys {unknown}; expected {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["conv"] = [vars(c).copy() for c in self.conv]
        out["blocks"] = [vars(b).copy() for b in self.blocks]
        out["read_layers"] = list(self.read_layers)
        return out


class EncoderConv(nn.Module):
    """Conv1d -> [LayerNorm over channels | GroupNorm per channel] -> activation, maskable channels."""

    def __init__(self, cin: int, dims: ConvDims, bias: bool, norm: str | None, act: str) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, dims.channels, dims.kernel, stride=dims.stride, bias=bias)
        self.norm_kind = norm
        self.norm = (nn.LayerNorm(dims.channels) if norm == "layer"
                     else nn.GroupNorm(dims.channels, dims.channels) if norm == "group" else None)
        self.act = activation(act)
        self.units = Units(dims.channels, "conv", min_keep=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        if self.norm_kind == "layer":
            y = self.units.layer_norm(y.transpose(1, 2), self.norm).transpose(1, 2)
        elif self.norm_kind == "group":
            y = self.norm(y)
        return self.units.scale(self.act(y), 1)


class Encoder(nn.Module):
    """Waveform (B, T) -> the hidden states of ``read_layers`` (B, frames, hidden) each."""

    def __init__(self, c: EncoderConfig) -> None:
        super().__init__()
        self.config = c
        chans = (1, *(d.channels for d in c.conv))
        self.convs = nn.ModuleList(
            EncoderConv(chans[i], d, c.conv_bias,
                        c.conv_norm if c.conv_norm == "layer" or i == 0 else None, c.conv_act)
            for i, d in enumerate(c.conv))
        self.proj_norm = nn.LayerNorm(chans[-1], eps=c.layer_norm_eps)
        self.proj = nn.Linear(chans[-1], c.hidden_size)
        self.proj_drop = nn.Dropout(c.feat_proj_dropout)
        self.pos_conv = nn.Conv1d(c.hidden_size, c.hidden_size, c.pos_conv_kernel, padding=c.pos_conv_kernel // 2,
                                  groups=c.pos_conv_groups)
        self.input_norm = None if c.stable_layer_norm else nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.hidden_dropout)
        with quiet_init():
            self.layers = nn.ModuleList(
                PrunableLayer(c.hidden_size, b.heads, c.head_dim, b.ffn, norm_first=c.stable_layer_norm,
                              act=c.hidden_act, eps=c.layer_norm_eps, dropout=c.hidden_dropout,
                              attn_dropout=c.attention_dropout, act_dropout=c.activation_dropout)
                for b in c.blocks)

    def forward(self, wave: Tensor) -> list[Tensor]:
        c = self.config
        x = (wave - wave.mean(dim=1, keepdim=True)) / torch.sqrt(wave.var(dim=1, keepdim=True, unbiased=False) + 1e-7)
        x = x[:, None]
        for conv in self.convs:
            x = conv(x)
        last = self.convs[-1].units
        x = last.scale(last.layer_norm(x.transpose(1, 2), self.proj_norm), -1)
        x = self.proj_drop(self.proj(x))
        pos = self.pos_conv(x.transpose(1, 2))
        if c.pos_conv_kernel % 2 == 0:
            pos = pos[:, :, :-1]
        x = x + activation(c.conv_act)(pos).transpose(1, 2)
        if self.input_norm is not None:
            x = self.input_norm(x)
        x = self.drop(x)
        out = {layer: x for layer in c.read_layers}
        for dims, layer in zip(c.blocks, self.layers):
            x = layer(x)
            for read in c.read_layers:
                if dims.block <= read:
                    out[read] = x
        return [out[read] for read in c.read_layers]


@dataclass(frozen=True)
class PrunedTeacherConfig:
    encoder: EncoderConfig
    head: PrunedHeadConfig
    origin: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"encoder": self.encoder.to_dict(), "head": self.head.to_dict(), "origin": dict(self.origin)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "PrunedTeacherConfig":
        unknown = sorted(set(data) - {"encoder", "head", "origin"})
        if unknown or "encoder" not in data or "head" not in data:
            raise ValueError("PrunedTeacherConfig.from_dict: needs keys encoder, head (and origin); "
                             f"got {sorted(data)}")
        encoder, head = EncoderConfig.from_dict(data["encoder"]), PrunedHeadConfig.from_dict(data["head"])
        if head.dim_input != encoder.hidden_size:
            raise ValueError(f"PrunedTeacherConfig: head.dim_input={head.dim_input} differs from the encoder's "
                             f"hidden_size={encoder.hidden_size}")
        return cls(encoder, head, dict(data.get("origin", {})))


class PrunedXlsrTeacher(FeaturesAndHead):
    """Pruned SSL encoder -> ``PrunableSqaHead``; the same forward contract as ``XlsrTeacher``
    (random ``feat_seq_len`` crops of the features while training, windows at inference)."""

    arch = ARCH

    def __init__(self, config: PrunedTeacherConfig) -> None:
        super().__init__()
        self.origin = dict(config.origin)
        self.features = Encoder(config.encoder)
        self.head = PrunableSqaHead(config.head)

    def score_crops(self, wave: Tensor) -> Tensor:
        """MOS of each row as one head window (centre-cropped or zero-padded features)."""
        feats = self.features(wave)
        return self.head(crop_features(feats[0] if len(feats) == 1 else feats, self.head.config.feat_seq_len))

    def pruned_config(self) -> PrunedTeacherConfig:
        return PrunedTeacherConfig(self.features.config, self.head.config, self.origin)

    def checkpoint_config(self) -> dict:
        return self.pruned_config().to_dict()

    # ---------------------------------------------------------------- pruning protocol

    def unit_plan(self) -> dict[str, TensorPlan]:
        plan = {}
        n = len(self.features.convs)
        for i, conv in enumerate(self.features.convs):
            g = f"features.convs.{i}.units"
            prev = ((1, f"features.convs.{i - 1}.units", 1),) if i else ()
            plan[f"features.convs.{i}.conv.weight"] = TensorPlan(((0, g, 1),) + prev)
            names = (["conv.bias"] if conv.conv.bias is not None else []) + \
                    (["norm.weight", "norm.bias"] if conv.norm is not None else [])
            plan.update({f"features.convs.{i}.{name}": TensorPlan(((0, g, 1),)) for name in names})
        last = f"features.convs.{n - 1}.units"
        plan["features.proj_norm.weight"] = TensorPlan(((0, last, 1),))
        plan["features.proj_norm.bias"] = TensorPlan(((0, last, 1),))
        plan["features.proj.weight"] = TensorPlan(((1, last, 1),))
        for j, layer in enumerate(self.features.layers):
            plan.update(layer.plan(f"features.layers.{j}."))
        plan.update(self.head.plan("head."))
        return plan

    def stacks(self) -> dict[str, list[str]]:
        return {"features.layers": [f"features.layers.{j}.gate" for j in range(len(self.features.layers))],
                **self.head.stacks("head.")}

    def rebuilt(self, keep: Mapping[str, Tensor]) -> "PrunedXlsrTeacher":
        c = self.features.config
        conv = tuple(replace(d, channels=len(keep[f"features.convs.{i}.units"])) for i, d in enumerate(c.conv))
        blocks = tuple(BlockDims(b.block, len(keep[f"features.layers.{j}.attn.units"]),
                                 len(keep[f"features.layers.{j}.ffn.units"]))
                       for j, b in enumerate(c.blocks) if len(keep[f"features.layers.{j}.gate"]))
        head = self.head.config_for(keep, "head.", self.head.config.dim_input)
        return PrunedXlsrTeacher(PrunedTeacherConfig(replace(c, conv=conv, blocks=blocks), head, self.origin))

    def fold_removed(self, state: dict[str, Tensor], keep: Mapping[str, Tensor]) -> None:
        """Nothing to fold: removed channels and blocks leave no constants behind."""

    def unit_rows(self) -> list[dict]:
        c, origin = self.features.config, self.origin
        conv_total = origin.get("conv_channels", [d.channels for d in c.conv])
        rows = [{"part": "encoder", "layer": i, "kind": "conv", "kept": d.channels, "total": conv_total[i],
                 "layer_kept": True} for i, d in enumerate(c.conv)]
        by_block = {b.block: b for b in c.blocks}
        for block in range(1, origin.get("n_blocks", max(c.read_layers)) + 1):
            b = by_block.get(block)
            for kind in ("heads", "ffn"):
                rows.append({"part": "encoder", "layer": block, "kind": kind, "kept": getattr(b, kind) if b else 0,
                             "total": origin.get(kind), "layer_kept": b is not None})
        return rows + self.head.unit_rows("head")


def _encoder_config(teacher: XlsrTeacher) -> EncoderConfig:
    w = teacher.features.model.config
    for name, ok in (("feat_extract_norm", w.feat_extract_norm in ("layer", "group")),
                     ("add_adapter", not getattr(w, "add_adapter", False)),
                     ("adapter_attn_dim", getattr(w, "adapter_attn_dim", None) is None)):
        if not ok:
            raise ValueError(f"from_teacher: Wav2Vec2 config {name}={getattr(w, name)!r} is not supported")
    n_blocks = len(teacher.features.model.encoder.layers)
    read = tuple(teacher.config.layers)
    return EncoderConfig(
        conv=tuple(ConvDims(c, k, s) for c, k, s in zip(w.conv_dim, w.conv_kernel, w.conv_stride)),
        conv_bias=bool(w.conv_bias), conv_norm=w.feat_extract_norm, conv_act=w.feat_extract_activation,
        hidden_size=w.hidden_size, head_dim=w.hidden_size // w.num_attention_heads,
        blocks=tuple(BlockDims(j, w.num_attention_heads, w.intermediate_size)
                     for j in range(1, n_blocks + 1) if j <= max(read)),
        read_layers=read, stable_layer_norm=bool(w.do_stable_layer_norm), hidden_act=w.hidden_act,
        layer_norm_eps=w.layer_norm_eps, pos_conv_kernel=w.num_conv_pos_embeddings,
        pos_conv_groups=w.num_conv_pos_embedding_groups, hidden_dropout=w.hidden_dropout,
        attention_dropout=w.attention_dropout, activation_dropout=w.activation_dropout,
        feat_proj_dropout=w.feat_proj_dropout)


def _encoder_state(teacher: XlsrTeacher, n_blocks: int) -> dict[str, Tensor]:
    m = teacher.features.model
    state: dict[str, Tensor] = {}
    for i, layer in enumerate(m.feature_extractor.conv_layers):
        state[f"features.convs.{i}.conv.weight"] = layer.conv.weight
        if layer.conv.bias is not None:
            state[f"features.convs.{i}.conv.bias"] = layer.conv.bias
        if hasattr(layer, "layer_norm"):
            state[f"features.convs.{i}.norm.weight"] = layer.layer_norm.weight
            state[f"features.convs.{i}.norm.bias"] = layer.layer_norm.bias
    fp = m.feature_projection
    state.update({"features.proj_norm.weight": fp.layer_norm.weight, "features.proj_norm.bias": fp.layer_norm.bias,
                  "features.proj.weight": fp.projection.weight, "features.proj.bias": fp.projection.bias,
                  "features.pos_conv.weight": m.encoder.pos_conv_embed.conv.weight,  # weight norm applied
                  "features.pos_conv.bias": m.encoder.pos_conv_embed.conv.bias})
    if not m.config.do_stable_layer_norm:
        state["features.input_norm.weight"] = m.encoder.layer_norm.weight
        state["features.input_norm.bias"] = m.encoder.layer_norm.bias
    names = {"attention.q_proj": "attn.q", "attention.k_proj": "attn.k", "attention.v_proj": "attn.v",
             "attention.out_proj": "attn.out", "layer_norm": "norm1", "final_layer_norm": "norm2",
             "feed_forward.intermediate_dense": "ffn.fc1", "feed_forward.output_dense": "ffn.fc2"}
    for j, layer in enumerate(list(m.encoder.layers)[:n_blocks]):
        for src, dst in names.items():
            module = layer.get_submodule(src)
            state[f"features.layers.{j}.{dst}.weight"] = module.weight
            state[f"features.layers.{j}.{dst}.bias"] = module.bias
    return {k: v.detach().clone() for k, v in state.items()}


def from_teacher(teacher: XlsrTeacher | PrunedXlsrTeacher) -> PrunedXlsrTeacher:
    """The prunable equivalent of an XLS-R teacher (same outputs); a pruned teacher is copied."""
    if isinstance(teacher, PrunedXlsrTeacher):
        return copy.deepcopy(teacher)
    encoder = _encoder_config(teacher)
    head, head_state = from_sqa_head(teacher.head)
    origin = {"arch": teacher.arch, "params": count_params(teacher),
              "conv_channels": [c.channels for c in encoder.conv],
              "n_blocks": max(encoder.read_layers), "heads": encoder.hidden_size // encoder.head_dim,
              "ffn": encoder.blocks[0].ffn if encoder.blocks else 0}
    out = PrunedXlsrTeacher(PrunedTeacherConfig(encoder, head.config, origin))
    state = _encoder_state(teacher, len(encoder.blocks))
    state.update({f"head.{k}": v for k, v in head_state.items()})
    out.load_state_dict(state, strict=True)
    return out.to(next(teacher.parameters()).device).train(teacher.training)


@checkpoint.register(ARCH)
def _build(config: dict) -> PrunedXlsrTeacher:
    return PrunedXlsrTeacher(PrunedTeacherConfig.from_dict(config))
