"""Convolutional-transformer students (DistillMOS family) with size presets.

    wave (B, T) 16 kHz -> per window: max-abs normalise -> STFT (hann, win 320, hop 160,
    reflect-padded by (win - hop) / 2) -> complex spectrum with power-law compressed magnitude
    |X|^0.3 * X / |X| as 2 channels (B, 2, F, T') -> Conv2d 3x3 stack (no padding in frequency,
    1 in time, per-layer strides, LeakyReLU 0.1) -> flatten channels x frequency -> SqaHead
    (BatchNorm, projection, transformer, attention pooling) -> MOS in 1..5.

Long clips are scored DistillMOS-style: windows of ``window_samples`` (122,880 = 7.68 s)
spread evenly at most ``window_hop`` apart, MOS averaged; shorter clips are zero-padded to one
window (at inference the front end skips the padding, ``ConvFrontEnd.zero_padded``: DistillMOS
scores a 4-s clip about twice as fast). ``forward_window`` scores one window of any length
>= ``stft_win`` as is (training, also on shorter crops: the head's positional encoding covers
any length).

``PRESETS`` holds sizes "10k" … "4M" (within ±10 % of the named count) and "distillmos-v7"
(the released architecture); ``preset("300k")`` finds a config of the scalable family for
any other count. The family is built for CPU speed, not only for its parameter count: five
conv layers that each halve the frequency axis (161 -> 80 -> 39 -> 19 -> 9 -> 4 bins), time
halved at the third, narrow channels in multiples of 4; about half the multiply-adds sit in
the front end (DistillMOS v7: 91 %).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sqa.models import checkpoint
from sqa.models.heads import HeadConfig, SqaHead, convert_released_state_dict, package_dir, window_starts


@dataclass(frozen=True)
class StudentConfig:
    """Architecture of a ``ConvTransformerSQA``; per-conv-layer lists have equal length."""

    conv_channels: tuple[int, ...]
    conv_freq_strides: tuple[int, ...]
    conv_time_strides: tuple[int, ...]
    dim_transformer: int
    n_heads: int
    n_layers: int
    ff_mult: int = 2
    dropout: float = 0.0
    sample_rate: int = 16000
    stft_win: int = 320
    stft_hop: int = 160
    compression: float = 0.3
    conv_kernel: int = 3
    leaky_slope: float = 0.1
    window_samples: int = 122880
    window_hop: int = 16000
    pos_frames: int | None = None  # head positions' reference length; None: frames of one window

    def __post_init__(self) -> None:
        for name in ("conv_channels", "conv_freq_strides", "conv_time_strides"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if not value or any(not isinstance(v, int) or v < 1 for v in value):
                raise ValueError(f"StudentConfig.{name} must be a non-empty list of positive ints, got {value!r}")
        n = len(self.conv_channels)
        if len(self.conv_freq_strides) != n or len(self.conv_time_strides) != n:
            raise ValueError(
                "StudentConfig: conv_channels, conv_freq_strides, conv_time_strides differ in length "
                f"({n}, {len(self.conv_freq_strides)}, {len(self.conv_time_strides)})"
            )
        for name in ("stft_win", "stft_hop", "conv_kernel", "window_samples", "window_hop", "sample_rate"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"StudentConfig.{name} must be a positive int, got {value!r}")
        if self.stft_hop > self.stft_win or (self.stft_win - self.stft_hop) % 2:
            raise ValueError(
                f"StudentConfig: stft_win - stft_hop must be even and >= 0, got {self.stft_win}, {self.stft_hop}"
            )
        if not 0.0 < self.compression <= 1.0:
            raise ValueError(f"StudentConfig.compression must be in (0, 1], got {self.compression!r}")
        if self.freq_bins_out < 1:
            raise ValueError(
                f"StudentConfig: conv_freq_strides {self.conv_freq_strides} leave no frequency bins "
                f"of {self.stft_win // 2 + 1}"
            )
        if self.window_samples < self.stft_win:
            raise ValueError(f"StudentConfig.window_samples={self.window_samples} is shorter than stft_win")
        self.head_config()  # validates transformer fields

    @property
    def freq_bins_out(self) -> int:
        """Frequency bins after the conv stack."""
        f = self.stft_win // 2 + 1
        for stride in self.conv_freq_strides:
            f = (f - self.conv_kernel) // stride + 1 if f >= self.conv_kernel else 0
        return f

    @property
    def feature_dim(self) -> int:
        """Per-frame feature size entering the head: last channels x frequency bins."""
        return self.conv_channels[-1] * self.freq_bins_out

    def frames(self, samples: int) -> int:
        """Head frames for a window of ``samples``."""
        t = (samples + (self.stft_win - self.stft_hop) - self.stft_win) // self.stft_hop + 1
        k = self.conv_kernel
        for stride in self.conv_time_strides:
            t = (t + 2 * (k // 2) - k) // stride + 1
        return t

    def head_config(self) -> HeadConfig:
        """The head's config; positions are based on the frames of one full window."""
        return HeadConfig(
            dim_input=self.feature_dim,
            dim_transformer=self.dim_transformer,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            feat_seq_len=self.pos_frames or self.frames(self.window_samples),
            dropout=self.dropout,
            ff_mult=self.ff_mult,
        )

    def to_dict(self) -> dict:
        """Plain JSON-able dict (lists for the per-layer fields)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "StudentConfig":
        """Inverse of ``to_dict``; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"StudentConfig.from_dict: unknown keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)


def compressed_spectrum(wave: Tensor, win: int, hop: int, power: float) -> Tensor:
    """(B, T) -> (B, 2, F, frames): real/imag of the STFT with magnitude raised to ``power``."""
    pad = (win - hop) // 2
    x = F.pad(wave, (pad, pad), mode="reflect")
    if torch.onnx.is_in_onnx_export():
        # ONNX has no complex tensors, and onnxruntime's STFT op is ~40x less exact (the |X|^0.3
        # compression magnifies that in near-silent bins): export the DFT as a strided conv
        n = torch.arange(win, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(torch.arange(win // 2 + 1, dtype=torch.float64), n) / win
        w = torch.hann_window(win, dtype=torch.float64)
        basis = torch.cat([w * torch.cos(angle), -w * torch.sin(angle)]).to(x.dtype).to(x.device).unsqueeze(1)
        ri = torch.stack(F.conv1d(x.unsqueeze(1), basis, stride=hop).split(win // 2 + 1, dim=1), dim=1)
    else:
        window = torch.hann_window(win, device=wave.device, dtype=wave.dtype)
        spec = torch.stft(x, n_fft=win, hop_length=hop, win_length=win, window=window, center=False,
                          return_complex=True)
        ri = torch.view_as_real(spec).permute(0, 3, 1, 2).contiguous()
    # |X|^p * X / |X| with |X| floored at 1e-12, via the squared magnitude (one pow, no sqrt)
    gain = ri.square().sum(dim=1, keepdim=True).clamp_min(1e-24).pow((power - 1.0) / 2)
    return ri * gain


class ConvFrontEnd(nn.Module):
    """Compressed complex STFT followed by a strided Conv2d/LeakyReLU stack."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        k = config.conv_kernel
        chans = (2, *config.conv_channels)
        self.convs = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], (k, k), stride=(fs, ts), padding=(0, k // 2))
            for i, (fs, ts) in enumerate(zip(config.conv_freq_strides, config.conv_time_strides))
        )

    def forward(self, wave: Tensor) -> Tensor:
        """(B, T) normalised waveform -> (B, frames, channels * freq)."""
        c = self.config
        x = compressed_spectrum(wave, c.stft_win, c.stft_hop, c.compression)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), c.leaky_slope)
        return x.flatten(1, 2).transpose(1, 2)

    def zero_padded(self, wave: Tensor, total: int) -> Tensor:
        """``forward(F.pad(wave, (0, total - T)))`` without running the stack over the padding.

        An output frame whose receptive field holds only padding is the same for every clip: it is
        taken from the stack's response to a window of silence (computed once per weights, device
        and length). The stack runs on the clip plus enough zeros for the other frames. Without
        gradients only (the cached response must not enter a graph); equal to the padded forward
        up to float rounding."""
        c = self.config
        n = wave.shape[1]
        pad, span = (c.stft_win - c.stft_hop) // 2, c.conv_kernel // 2
        stride, reach = 1, 0  # output frame j reads STFT frames j*stride - reach .. j*stride + reach
        for s in c.conv_time_strides:
            reach += span * stride
            stride *= s
        # first output frame that reads padding only: (j * stride - reach) * hop - pad >= n
        keep = -(-(n + pad + reach * c.stft_hop) // (stride * c.stft_hop))
        cut = ((keep - 1) * stride + reach + 1) * c.stft_hop + pad  # samples the kept frames read
        if torch.is_grad_enabled() or cut >= total or n >= total - pad:  # the end's reflection holds signal
            return self(F.pad(wave, (0, total - n)))
        clip = self(F.pad(wave, (0, cut - n)))[:, :keep]
        silence = self._silence(total, wave)[keep:]
        return torch.cat([clip, silence.expand(wave.shape[0], -1, -1)], dim=1)

    def _silence(self, total: int, like: Tensor) -> Tensor:
        """Frames (frames, features) of a ``total``-sample window of zeros, cached per weights
        (parameters and buffers, e.g. a pruned front end's masks)."""
        state = (*self.parameters(), *self.buffers())
        key = (total, like.device, like.dtype, tuple((t.data_ptr(), t._version) for t in state))
        if getattr(self, "_silence_cache", (None,))[0] != key:
            self._silence_cache = (key, self(like.new_zeros(1, total))[0])
        return self._silence_cache[1]


class ConvTransformerSQA(nn.Module):
    """Waveform (B, T) at 16 kHz -> MOS (B,) in 1..5.

    ``windowed=True`` (default): any length, DistillMOS windowing. ``windowed=False``:
    ``forward`` = ``forward_window`` (one window of the given length; use for training).
    ``window_batch`` caps how many windows run through the network at once (at least one window
    per clip of the batch); windows are cut only as they are scored, so memory does not grow with
    a clip's length beyond the clip itself.
    """

    arch = "conv-transformer-sqa"

    def __init__(self, config: StudentConfig, windowed: bool = True, window_batch: int = 8) -> None:
        super().__init__()
        self.config = config
        self.windowed = windowed
        self.window_batch = window_batch
        self.frontend = ConvFrontEnd(config)
        self.head = SqaHead(config.head_config())

    def _check_wave(self, wave: Tensor, min_len: int) -> None:
        if wave.dim() != 2 or not wave.is_floating_point():
            got = f"{wave.dtype} {tuple(wave.shape)}"
            raise ValueError(f"ConvTransformerSQA: wave must be a float (batch, samples) tensor, got {got}")
        if wave.shape[1] < min_len:
            raise ValueError(f"ConvTransformerSQA: wave has {wave.shape[1]} samples, needs >= {min_len}")

    def _normalised(self, wave: Tensor) -> Tensor:
        """Each row divided by its maximum magnitude (the model's input normalisation)."""
        return wave / (wave.abs().amax(dim=1, keepdim=True) + 1e-8)

    def forward_window_unit(self, wave: Tensor) -> Tensor:
        """Quality in [0, 1], shape (B,), of each row taken as one window (max-abs normalised)."""
        self._check_wave(wave, self.config.stft_win)
        return self.head.forward_unit(self.frontend(self._normalised(wave)))

    def forward_window(self, wave: Tensor) -> Tensor:
        """MOS (B,) of each row taken as one window of any length >= stft_win."""
        return 1.0 + 4.0 * self.forward_window_unit(wave)

    def forward_window_pooled(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        """MOS (B,) and the head's pooled summary (B, dim_transformer) of each row taken as one window."""
        self._check_wave(wave, self.config.stft_win)
        pooled = self.head.pooled(self.frontend(self._normalised(wave)))
        return 1.0 + 4.0 * self.head.score(pooled), pooled

    def forward(self, wave: Tensor) -> Tensor:
        """MOS (B,): windowed average over the clip (or one window if ``windowed`` is False)."""
        if not self.windowed:
            return self.forward_window(wave)
        return 1.0 + 4.0 * self._over_windows(wave, self.head.forward_unit)

    def embed(self, wave: Tensor) -> Tensor:
        """(B, dim_transformer): the head's pooled summary of each window, averaged over the clip's
        windows as ``forward`` averages their scores (what a student's hint loss imitates)."""
        return self._over_windows(wave, self.head.pooled)

    def _over_windows(self, wave: Tensor, head_fn) -> Tensor:
        """Mean over the clip's windows of ``head_fn`` applied to each window's frame features."""
        self._check_wave(wave, 1)
        size, hop = self.config.window_samples, self.config.window_hop
        if self.config.stft_win <= wave.shape[1] < size:  # one zero-padded window
            return head_fn(self.frontend.zero_padded(self._normalised(wave), size))
        if wave.shape[1] < size:
            wave = F.pad(wave, (0, size - wave.shape[1]))
        starts = window_starts(wave.shape[1], size, hop)
        per_forward = max(1, self.window_batch // wave.shape[0])  # windows of each clip per forward
        total = 0.0
        for i in range(0, len(starts), per_forward):  # cut only the windows of one forward at a time
            chunk = torch.cat([wave[:, s:s + size] for s in starts[i:i + per_forward]], dim=0)  # window-major
            out = head_fn(self.frontend(self._normalised(chunk)))
            total = total + out.reshape(-1, wave.shape[0], *out.shape[1:]).sum(dim=0)
        return total / len(starts)

    def with_window(self, seconds: float) -> "ConvTransformerSQA":
        """Score (and train on) windows of ``seconds``, keeping the head's positional encoding."""
        self.config = replace(self.config, window_samples=int(round(seconds * self.config.sample_rate)),
                              pos_frames=self.head.config.feat_seq_len)
        return self

    def checkpoint_config(self) -> dict:
        return self.config.to_dict()


class FrontEndFeatures(nn.Module):
    """A student's normalisation + conv front end as a (frozen) feature extractor: (B, T) -> [(B, L, C)]."""

    def __init__(self, model: ConvTransformerSQA) -> None:
        super().__init__()
        self.frontend = model.frontend

    def forward(self, wave: Tensor) -> list[Tensor]:
        return [self.frontend(wave / (wave.abs().amax(dim=1, keepdim=True) + 1e-8))]


@checkpoint.register(ConvTransformerSQA.arch)
def _build(config: dict) -> ConvTransformerSQA:
    return ConvTransformerSQA(StudentConfig.from_dict(config))


# ---------------------------------------------------------------- presets

DISTILLMOS_V7 = StudentConfig(
    conv_channels=(64, 64, 128, 256, 256, 256),
    conv_freq_strides=(1, 2, 2, 2, 2, 2),
    conv_time_strides=(1, 1, 1, 1, 1, 2),
    dim_transformer=200,
    n_heads=8,
    n_layers=7,
)


def _family_heads(dim: int) -> int:
    return 2 if dim < 64 else 4 if dim < 256 else 8


def family_config(dim: int, conv_width: int) -> StudentConfig:
    """A member of the scalable student family.

    Front end: five 3x3 convs, each halving frequency (161 -> 4 bins), time halved once at
    the third; channels ``conv_width`` * (1, 1, 2, 4, 4). Transformer: ``dim`` wide (FFN 2x),
    2 heads below dim 64, 4 below 256, else 8 (fewer heads run faster on CPU); 2 layers below
    dim 48, 3 below 96, 4 below 160, 5 below 224, else 6.
    """
    if dim < 2 or conv_width < 1:
        raise ValueError(f"family_config: need dim >= 2 and conv_width >= 1, got dim={dim}, conv_width={conv_width}")
    heads = _family_heads(dim)
    layers = 2 if dim < 48 else 3 if dim < 96 else 4 if dim < 160 else 5 if dim < 224 else 6
    c = conv_width
    return StudentConfig(
        conv_channels=(c, c, 2 * c, 4 * c, 4 * c),
        conv_freq_strides=(2, 2, 2, 2, 2),
        conv_time_strides=(1, 1, 2, 1, 1),
        dim_transformer=dim,
        n_heads=heads,
        n_layers=layers,
    )


def config_params(config: StudentConfig) -> int:
    """Parameter count of the model ``config`` builds, computed without building it."""
    k2 = config.conv_kernel ** 2
    chans = (2, *config.conv_channels)
    front = sum(cin * cout * k2 + cout for cin, cout in zip(chans[:-1], chans[1:]))
    d, ff, feat = config.dim_transformer, config.ff_mult * config.dim_transformer, config.feature_dim
    layer = (3 * d * d + 3 * d) + (d * d + d) + (d * ff + ff) + (ff * d + d) + 4 * d
    head = 4 * feat + (feat * d + d) + config.n_layers * layer + 2 * d + (2 * d * d + 2 * d) + (2 * d + 1) + (d + 1)
    return front + head


# searched shapes: dims divisible by their head count (<= ~6 % apart); conv widths above 8 in
# steps of 4, because channel counts that are multiples of 4 run up to 1.7x faster on CPU
_FAMILY_DIMS = [*range(8, 64, 2), *range(64, 256, 4), *range(256, 513, 8)]


def _family_widths(dim: int) -> list[int]:
    return [*range(1, min(8, dim // 2) + 1), *range(12, dim // 2 + 1, 4)]


def search_config(target: int, tolerance: float = 0.10) -> StudentConfig:
    """Family member with ``target`` parameters (±``tolerance``), trading the count error
    against a conv width away from dim / 6 (front end 10-25 % of the parameters, ~half the MACs)."""
    if target < 1:
        raise ValueError(f"size must be positive, got {target}")
    best, best_key = None, None
    for dim in _FAMILY_DIMS:
        for width in _family_widths(dim):
            cfg = family_config(dim, width)
            err = abs(config_params(cfg) - target) / target
            if err > tolerance:
                continue
            key = abs(math.log(width / max(1.0, dim / 6))) + 5.0 * err
            if best_key is None or key < best_key:
                best, best_key = cfg, key
    if best is None:
        raise ValueError(f"size {target:,}: no student config within ±{tolerance:.0%} in the family")
    return best


def parse_size(size: str) -> int:
    """'10k' -> 10_000, '1.5M' -> 1_500_000, '2500' -> 2500."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", str(size))
    if not m:
        raise ValueError(f"size {size!r} is not a parameter count like '300k', '1.5M' or '25000'")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()]
    return round(float(m.group(1)) * scale)


# name -> (dim, conv_width): what search_config picked, frozen so that presets never drift
_PRESET_SHAPES = {
    "10k": (18, 3),
    "25k": (30, 5),
    "50k": (42, 7),
    "100k": (54, 8),
    "250k": (80, 16),
    "500k": (108, 16),
    "1M": (152, 24),
    "2M": (196, 32),
    "4M": (256, 44),
}
PRESETS: dict[str, StudentConfig] = {name: family_config(*shape) for name, shape in _PRESET_SHAPES.items()}
PRESETS["distillmos-v7"] = DISTILLMOS_V7


def preset(size: str) -> StudentConfig:
    """Config for a preset name ("10k" … "4M", "distillmos-v7") or any count like "300k"."""
    if size in PRESETS:
        return PRESETS[size]
    try:
        return search_config(parse_size(size))
    except ValueError as err:
        raise ValueError(f"preset({size!r}): {err}; presets: {sorted(PRESETS)}") from None


# ---------------------------------------------------------------- released DistillMOS


def convert_distillmos_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map a ``distillmos.ConvTransformerSQAModel`` state dict onto ``ConvTransformerSQA``."""
    out = {f"head.{k}": v for k, v in convert_released_state_dict(sd, prefix="transformer_pool_attn.").items()}
    unknown = []
    for key, value in sd.items():
        m = re.fullmatch(r"cnn\.cnn\.(\d+)\.(weight|bias)", key)
        if m and int(m.group(1)) % 2 == 0:
            out[f"frontend.convs.{int(m.group(1)) // 2}.{m.group(2)}"] = value
        elif not key.startswith("transformer_pool_attn."):
            unknown.append(key)
    if unknown:
        raise ValueError(f"convert_distillmos_state_dict: unexpected keys {unknown[:5]} (of {len(unknown)})")
    return out


def distillmos_v7(pretrained: bool = True) -> ConvTransformerSQA:
    """The released DistillMOS v7 architecture; with the wheel's weights (eval mode) if ``pretrained``."""
    model = ConvTransformerSQA(DISTILLMOS_V7)
    if pretrained:
        path = package_dir("distillmos") / "weights" / "distill_mos_v7.pt"
        if not path.is_file():
            raise FileNotFoundError(f"DistillMOS weights missing: {path}")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(convert_distillmos_state_dict(ckpt["model"]))
        model.eval()
    return model
