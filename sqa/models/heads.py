"""XLS-R-SQA head: a small transformer with attention pooling on frame features.

The head maps a sequence of frame features (B, L, C) — one XLS-R hidden layer, two layers
fused (``fusion=True``), MFCCs, or a student's conv features — to a MOS in 1..5:

    input BatchNorm per input -> [fusion: Linear(2, 1) over the two layers] -> BatchNorm
    -> Linear down-projection -> + sinusoidal positions -> TransformerEncoder (post-norm,
    ReLU, FFN = ff_mult * dim) -> BatchNorm -> attention pooling (FFN scorer, softmax over
    time) -> Linear -> sigmoid y -> MOS = 1 + 4 y

``SqaHead.forward`` returns the MOS (B,); ``SqaHead.forward_unit`` returns y in [0, 1].
The numerics match the released xls-r-sqa heads (Tamm et al.), whose checkpoints load through
``convert_released_state_dict`` / ``load_released_head``.

Positions: the sinusoid uses the base ``2 * feat_seq_len`` (as released) and is evaluated for
any sequence length, so shorter or longer sequences than ``feat_seq_len`` work; released
models were trained on exactly ``feat_seq_len`` = 384 frames (7.68 s at 50 frames/s), which is
why ``crop_features`` and ``predict_long`` exist.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

FEAT_SEQ_LEN = 384
MFCC_SAMPLE_RATE = 16000
N_MFCC = 40
MFCC_CHUNK_FRAMES = 4000  # MFCC frames computed at once for long clips (50 s of audio)
WINDOW_BATCH = 8  # windows per head forward in predict_long

# backbone -> (feature dim, layers with released single-layer heads); fusion heads use both.
BACKBONES: dict[str, tuple[int, tuple[int, ...]]] = {
    "300m": (1024, (5, 21)),
    "1b": (1280, (10, 41)),
    "2b": (1920, (10, 41)),
    "mfcc": (N_MFCC, ()),
}
RELEASED_VERSIONS = ("sqa-v2", "sqa")
RELEASED_VARIANTS = ("full", "subset")
RELEASED_N_HEADS = 4

Features = Union[Tensor, Sequence[Tensor]]


@dataclass(frozen=True)
class HeadConfig:
    """Architecture of an ``SqaHead``; defaults are the released xls-r-sqa heads."""

    dim_input: int
    dim_transformer: int = 32
    n_heads: int = 4
    n_layers: int = 4
    feat_seq_len: int = FEAT_SEQ_LEN
    fusion: bool = False
    dropout: float = 0.0
    ff_mult: int = 2

    def __post_init__(self) -> None:
        for name in ("dim_input", "dim_transformer", "n_heads", "n_layers", "feat_seq_len", "ff_mult"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"HeadConfig.{name} must be a positive int, got {value!r}")
        if self.dim_transformer % 2:
            raise ValueError(f"HeadConfig.dim_transformer must be even (sin/cos pairs), got {self.dim_transformer}")
        if self.dim_transformer % self.n_heads:
            raise ValueError(
                f"HeadConfig.dim_transformer={self.dim_transformer} is not divisible by n_heads={self.n_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"HeadConfig.dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        """Plain JSON-able dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HeadConfig":
        """Inverse of ``to_dict``; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"HeadConfig.from_dict: unknown keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)


def sinusoid_positions(n: int, dim: int, base: float, device=None, dtype=torch.float32) -> Tensor:
    """Sinusoidal encoding (n, dim): even columns sin, odd columns cos of pos * base^(-2i/dim)."""
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(base) / dim))
    angles = torch.arange(n, device=device).unsqueeze(1) * inv_freq
    return torch.stack((angles.sin(), angles.cos()), dim=-1).reshape(n, dim).to(dtype)


def _norm_over_time(norm: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """Apply a channel BatchNorm to (B, L, C)."""
    return norm(x.transpose(1, 2)).transpose(1, 2)


class AttentionPool(nn.Module):
    """Softmax attention pooling over time; scores from a ReLU feed-forward net."""

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, 2 * dim)
        self.score = nn.Linear(2 * dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, D)."""
        scores = self.score(self.dropout(torch.relu(self.hidden(x))))  # (B, L, 1)
        weights = torch.softmax(scores, dim=1)
        return (weights.transpose(1, 2) @ x).squeeze(1)


class SqaHead(nn.Module):
    """Transformer + attention-pooling MOS head on frame features (single layer or fusion)."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.input_norms = nn.ModuleList(nn.BatchNorm1d(c.dim_input) for _ in range(2 if c.fusion else 1))
        self.fuse = nn.Linear(2, 1) if c.fusion else None
        self.pre_norm = nn.BatchNorm1d(c.dim_input)
        self.proj = nn.Linear(c.dim_input, c.dim_transformer)
        self.proj_drop = nn.Dropout(c.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=c.dim_transformer,
            nhead=c.n_heads,
            dim_feedforward=c.ff_mult * c.dim_transformer,
            dropout=c.dropout,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=c.n_layers, enable_nested_tensor=False)
        self.encoder_drop = nn.Dropout(c.dropout)
        self.post_norm = nn.BatchNorm1d(c.dim_transformer)
        self.pool = AttentionPool(c.dim_transformer, c.dropout)
        self.readout = nn.Linear(c.dim_transformer, 1)
        self.register_buffer(
            "positions", sinusoid_positions(c.feat_seq_len, c.dim_transformer, 2 * c.feat_seq_len), persistent=False
        )

    def _position_table(self, n: int, like: Tensor) -> Tensor:
        if n <= self.positions.shape[0]:
            return self.positions[:n].to(like.dtype)
        d = self.config.dim_transformer
        return sinusoid_positions(n, d, 2 * self.config.feat_seq_len, device=like.device, dtype=like.dtype)

    def _merge_inputs(self, features: Features) -> Tensor:
        items = [features] if isinstance(features, Tensor) else list(features)
        want = len(self.input_norms)
        if len(items) != want:
            kind = "fusion head needs 2 feature tensors" if want == 2 else "single-layer head needs 1 tensor"
            raise ValueError(f"SqaHead: {kind}, got {len(items)}")
        for i, x in enumerate(items):
            if x.dim() != 3 or x.shape[-1] != self.config.dim_input:
                raise ValueError(
                    f"SqaHead: features[{i}] must be (batch, frames, {self.config.dim_input}), got {tuple(x.shape)}"
                )
        if want == 1:
            return _norm_over_time(self.input_norms[0], items[0])
        if items[0].shape != items[1].shape:
            shapes = f"{tuple(items[0].shape)} vs {tuple(items[1].shape)}"
            raise ValueError(f"SqaHead: fusion inputs differ in shape: {shapes}")
        normed = [_norm_over_time(norm, x) for norm, x in zip(self.input_norms, items)]
        return self.fuse(torch.stack(normed, dim=-1)).squeeze(-1)

    def pooled(self, features: Features) -> Tensor:
        """The attention-pooled summary (B, dim_transformer) that the readout scores."""
        x = self._merge_inputs(features)
        x = _norm_over_time(self.pre_norm, x)
        x = self.proj_drop(self.proj(x))
        x = x + self._position_table(x.shape[1], x)
        x = self.encoder_drop(self.encoder(x))
        x = _norm_over_time(self.post_norm, x)
        return self.pool(x)

    def score(self, pooled: Tensor) -> Tensor:
        """Quality in [0, 1], shape (B,), of pooled summaries (B, dim_transformer)."""
        return torch.sigmoid(self.readout(pooled).squeeze(-1))

    def forward_unit(self, features: Features) -> Tensor:
        """Quality in [0, 1], shape (B,). ``features``: (B, L, C), or two of them for fusion."""
        return self.score(self.pooled(features))

    def forward(self, features: Features) -> Tensor:
        """MOS in [1, 5], shape (B,)."""
        return 1.0 + 4.0 * self.forward_unit(features)


# ---------------------------------------------------------------- released xls-r-sqa heads

_RELEASED_KEY_MAP = (  # released prefix -> our prefix (first match wins)
    ("norm_input.", "input_norms.0."),
    ("norm_inputs.", "input_norms."),
    ("lin_infusion.", "fuse."),
    ("transformer.norm.", "pre_norm."),
    ("transformer.linear_proj.", "proj."),
    ("transformer.transformer_encoder.", "encoder."),
    ("norm_trans.", "post_norm."),
    ("pool.linear1.", "pool.hidden."),
    ("pool.linear2.", "pool.score."),
    ("pool.linear3.", "readout."),
)
_RELEASED_PE_KEY = "transformer.position_encoding.pe"


def convert_released_state_dict(sd: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """Map an xls-r-sqa ``SingleLayerModel``/``FusionModel`` state dict onto ``SqaHead``.

    ``prefix`` selects and strips a sub-module (e.g. ``"transformer_pool_attn."`` in DistillMOS).
    The stored positional table is checked against ``sinusoid_positions`` and dropped.
    """
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name == _RELEASED_PE_KEY:
            _check_released_positions(value, key)
            continue
        for old, new in _RELEASED_KEY_MAP:
            if name.startswith(old):
                out[new + name[len(old):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"convert_released_state_dict: unexpected keys {unknown[:5]} (of {len(unknown)})")
    if not out:
        raise ValueError(f"convert_released_state_dict: no keys with prefix {prefix!r}")
    return out


def _check_released_positions(pe: Tensor, key: str) -> None:
    n, d = pe.shape[-2], pe.shape[-1]
    ours = sinusoid_positions(n, d, 2 * n)
    err = (pe.reshape(n, d).float() - ours).abs().max().item()
    if err > 1e-4:  # float32 sin/cos of arguments up to ~n differ by ~2e-5 across platforms
        raise ValueError(f"{key}: stored positional encoding differs from the sinusoid by {err:.3g}")


def released_head_config(
    sd: dict[str, Tensor], n_heads: int = RELEASED_N_HEADS, prefix: str = ""
) -> HeadConfig:
    """Infer the ``HeadConfig`` of a released (xls-r-sqa layout) state dict; ``n_heads`` is not stored."""
    try:
        proj = sd[prefix + "transformer.linear_proj.weight"]
        pe = sd[prefix + _RELEASED_PE_KEY]
    except KeyError as err:
        raise ValueError(f"released_head_config: state dict lacks {err.args[0]!r}") from None
    layer_prefix = prefix + "transformer.transformer_encoder.layers."
    layers = {k[len(layer_prefix):].split(".")[0] for k in sd if k.startswith(layer_prefix)}
    return HeadConfig(
        dim_input=proj.shape[1],
        dim_transformer=proj.shape[0],
        n_heads=n_heads,
        n_layers=len(layers),
        feat_seq_len=pe.shape[-2],
        fusion=(prefix + "lin_infusion.weight") in sd,
    )


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name!r} is not installed (pip install it; see pyproject.toml)")
    return Path(list(spec.submodule_search_locations)[0])


def released_head_path(
    backbone: str,
    layer: Union[int, Literal["fusion"], None] = None,
    variant: str = "full",
    version: str = "sqa-v2",
) -> Path:
    """Path of a head checkpoint shipped in the xls-r-sqa wheel (validates the arguments)."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
    if variant not in RELEASED_VARIANTS:
        raise ValueError(f"variant must be one of {RELEASED_VARIANTS}, got {variant!r}")
    if version not in RELEASED_VERSIONS:
        raise ValueError(f"version must be one of {RELEASED_VERSIONS}, got {version!r}")
    layers = BACKBONES[backbone][1]
    if backbone == "mfcc":
        if layer not in (None, 0):
            raise ValueError(f"backbone 'mfcc' takes no layer, got layer={layer!r}")
        rel = Path("mfcc") / f"model_mfcc_{variant}.pt"
    else:
        if layer != "fusion" and layer not in layers:
            raise ValueError(
                f"layer for backbone {backbone!r} must be one of {list(layers)} or 'fusion', got {layer!r}"
            )
        tag = "fusion" if layer == "fusion" else f"lay{layer}"
        rel = Path(f"xls-r-{backbone}") / f"model_{backbone}_{tag}_{variant}.pt"
    path = package_dir("xls_r_sqa") / "models" / version / rel
    if not path.is_file():
        raise FileNotFoundError(f"released head checkpoint missing: {path}")
    return path


def load_released_head(
    backbone: str,
    layer: Union[int, Literal["fusion"], None] = None,
    variant: str = "full",
    version: str = "sqa-v2",
    weights: bool = True,
) -> SqaHead:
    """Build an ``SqaHead`` with the shipped xls-r-sqa weights, in eval mode.

    ``backbone``: "300m" | "1b" | "2b" | "mfcc"; ``layer``: a shipped layer (300m: 5, 21;
    1b/2b: 10, 41) or "fusion" (both); None for mfcc. ``weights=False``: the shipped head's
    architecture untrained (sizes read from the file), e.g. for a checkpoint to fill.
    """
    path = released_head_path(backbone, layer, variant, version)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    head = SqaHead(released_head_config(sd))
    if weights:
        head.load_state_dict(convert_released_state_dict(sd))
    return head.eval()


# ---------------------------------------------------------------- features and windows


@functools.lru_cache(maxsize=4)
def _mfcc_transform(device: str) -> nn.Module:
    from torchaudio.transforms import MFCC

    with warnings.catch_warnings():  # 128 mels on a 201-bin STFT leave one band empty (as released)
        warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
        return MFCC(sample_rate=MFCC_SAMPLE_RATE, n_mfcc=N_MFCC).to(device)


def mfcc_features(wave_16k: Tensor, chunk_frames: int = MFCC_CHUNK_FRAMES) -> Tensor:
    """40 MFCCs per 12.5 ms frame as in xls-r-sqa's MFCC model: (B, T) 16 kHz -> (B, L, 40).

    torchaudio defaults (n_fft 400, hop 200, 128 HTK mels, power dB with an 80 dB floor,
    orthonormal DCT-II). The 80 dB floor is taken per clip (xls-r-sqa takes it over the whole
    batch, which is the same for batch size 1). Clips longer than ``chunk_frames`` frames are
    computed ``chunk_frames`` at a time in two passes (the clip's peak for the floor, then the
    frames), so the spectrogram of a long clip is never held whole: only the (B, L, 40) result.
    """
    if wave_16k.dim() != 2 or not wave_16k.is_floating_point():
        got = f"{wave_16k.dtype} {tuple(wave_16k.shape)}"
        raise ValueError(f"mfcc_features: wave_16k must be a float (batch, samples) tensor, got {got}")
    transform = _mfcc_transform(str(wave_16k.device))
    hop = transform.MelSpectrogram.hop_length
    n_frames = wave_16k.shape[1] // hop + 1  # centred frames
    if n_frames <= chunk_frames:
        mfcc = transform(wave_16k.unsqueeze(1))  # (B, 1, 40, L)
        return mfcc.squeeze(1).transpose(1, 2)
    bounds = [(f, min(f + chunk_frames, n_frames)) for f in range(0, n_frames, chunk_frames)]
    peak = torch.stack([_mel_db(transform, wave_16k, a, b).amax(dim=(1, 2)) for a, b in bounds]).amax(dim=0)
    floor = (peak - transform.top_db)[:, None, None]
    out = wave_16k.new_empty(wave_16k.shape[0], n_frames, transform.n_mfcc)
    for a, b in bounds:
        db = torch.maximum(_mel_db(transform, wave_16k, a, b), floor)  # (B, mels, frames)
        out[:, a:b] = torch.matmul(db.transpose(1, 2), transform.dct_mat)
    return out


def _mel_db(transform: nn.Module, wave: Tensor, first: int, stop: int) -> Tensor:
    """Power mel spectrogram in dB (no floor) of centred frames ``first..stop`` of ``wave``, read
    from just the samples they cover (reflect-padded at the clip's ends, as a centred STFT is)."""
    import torchaudio.functional as AF

    mel = transform.MelSpectrogram
    spec, n_fft, hop = mel.spectrogram, mel.n_fft, mel.hop_length
    lo, hi = first * hop - n_fft // 2, (stop - 1) * hop + n_fft - n_fft // 2
    total = wave.shape[1]
    seg = wave[:, max(lo, 0):min(hi, total)]
    if lo < 0:  # the whole clip's reflect padding (edge sample not repeated), taken from the clip
        seg = torch.cat([wave[:, 1:1 - lo].flip(1), seg], dim=1)
    if hi > total:
        seg = torch.cat([seg, wave[:, total - 1 - (hi - total):total - 1].flip(1)], dim=1)
    power = AF.spectrogram(seg, pad=spec.pad, window=spec.window, n_fft=spec.n_fft, hop_length=spec.hop_length,
                           win_length=spec.win_length, power=spec.power, normalized=spec.normalized, center=False,
                           onesided=spec.onesided)
    amin = transform.amplitude_to_DB.amin
    return 10.0 * torch.log10(torch.clamp(mel.mel_scale(power), min=amin))


def window_starts(total: int, window: int, hop: int) -> list[int]:
    """Start offsets of windows covering ``total`` items: evenly spread, spacing <= ``hop``.

    One window when ``total <= window``; otherwise ceil((total - window) / hop) + 1 windows,
    the first at 0 and the last ending at ``total`` (the DistillMOS scheme).
    """
    if window < 1 or hop < 1:
        raise ValueError(f"window_starts: window and hop must be >= 1, got window={window}, hop={hop}")
    over = total - window
    if over <= 0:
        return [0]
    n = math.ceil(over / hop) + 1
    return [int(s) for s in (np.linspace(0.0, 1.0, n) * over).astype(np.int64)]


def _as_list(feats: Features) -> tuple[list[Tensor], bool]:
    if isinstance(feats, Tensor):
        return [feats], True
    items = list(feats)
    if not items:
        raise ValueError("features: empty sequence")
    return items, False


def crop_features(
    feats: Features,
    n: int = FEAT_SEQ_LEN,
    mode: Literal["center", "random"] = "center",
    generator: torch.Generator | None = None,
) -> Features:
    """Crop (B, L, C) features to n frames (zero-pad the end when shorter).

    ``mode="center"`` matches xls-r-sqa's CenterCrop; ``"random"`` draws one offset from
    ``generator`` for the batch. A sequence of tensors (fusion layers) is cropped alike.
    """
    items, single = _as_list(feats)
    length = items[0].shape[1]
    for i, x in enumerate(items):
        if x.dim() != 3 or x.shape[1] != length:
            raise ValueError(f"crop_features: features[{i}] must be (batch, {length}, C), got {tuple(x.shape)}")
    if n < 1:
        raise ValueError(f"crop_features: n must be >= 1, got {n}")
    if mode == "center":
        start = int(length / 2 - n / 2) if length > n else 0
    elif mode == "random":
        start = int(torch.randint(0, length - n + 1, (1,), generator=generator)) if length > n else 0
    else:
        raise ValueError(f"crop_features: mode must be 'center' or 'random', got {mode!r}")
    out = []
    for x in items:
        x = x[:, start:start + n]
        if x.shape[1] < n:
            x = torch.nn.functional.pad(x, (0, 0, 0, n - x.shape[1]))
        out.append(x)
    return out[0] if single else out


def predict_long(head: SqaHead, feats: Features, n: int | None = None, hop: int = 50,
                 window_batch: int = WINDOW_BATCH) -> Tensor:
    """MOS (B,) of clips of any length: mean of the head over n-frame windows spaced <= hop.

    Clips of at most n frames (default ``head.config.feat_seq_len``) give one zero-padded
    window. hop=50 frames is 1 s of XLS-R features (DistillMOS's spacing). Windows are cut and
    scored ``window_batch`` per clip at a time, so memory does not grow with a clip's length.
    """
    n = n or head.config.feat_seq_len
    items, single = _as_list(feats)
    batch, length = items[0].shape[0], items[0].shape[1]
    if length <= n:
        return head(crop_features(items[0] if single else items, n))
    starts = window_starts(length, n, hop)
    total = items[0].new_zeros(batch)
    for i in range(0, len(starts), max(1, window_batch)):
        chunk = starts[i:i + max(1, window_batch)]
        windows = [torch.cat([x[:, s:s + n] for s in chunk], dim=0) for x in items]  # window-major
        total = total + head.forward_unit(windows[0] if single else windows).reshape(len(chunk), batch).sum(dim=0)
    return 1.0 + 4.0 * total / len(starts)
