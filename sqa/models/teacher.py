"""The teacher: an SSL speech encoder (XLS-R by default) + the XLS-R-SQA head.

The backbone comes from transformers (``Wav2Vec2Model.from_pretrained``: a hub id or a local
folder — the same code path) and is truncated after the highest layer used. The head reads the
output of encoder block ``L`` (``hidden_states[L]`` in transformers' numbering: 0 = the input
of the first block), captured with forward hooks so the encoder's final LayerNorm never applies.

Teacher names: ``xlsr-<300m|1b|2b>-l<L>`` or ``xlsr-<size>-l<L1>+<L2>`` (two layers fused).
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from sqa import atomic, extras
from sqa.models import checkpoint
from sqa.models.heads import HeadConfig, SqaHead, crop_features, predict_long, window_starts

SAMPLE_RATE = 16000
#: clips up to this long go through the encoder whole (as the released XLS-R-SQA scores them);
#: longer ones chunk by chunk, so memory does not grow with a clip's length
WHOLE_CLIP_MAX_S = 60.0

HUB_IDS = {"300m": "facebook/wav2vec2-xls-r-300m", "1b": "facebook/wav2vec2-xls-r-1b",
           "2b": "facebook/wav2vec2-xls-r-2b"}
_NAME = re.compile(r"xlsr-(?P<size>300m|1b|2b)-l(?P<a>\d+)(?:\+(?P<b>\d+))?")
FRAME_RATE = 50  # wav2vec 2.0 frames per second at 16 kHz


@dataclass
class TeacherConfig:
    """Everything needed to rebuild a teacher (stored in its checkpoint)."""

    backbone: str  # hub id or local folder of a Wav2Vec2 model
    layers: list[int]
    head: dict = field(default_factory=dict)  # HeadConfig fields; dim_input filled from the backbone
    finetune_top: int = 0  # encoder blocks below the top layer used that stay trainable (0 = frozen)
    backbone_config: dict | None = None  # set in checkpoints: rebuild without the hub

    def to_dict(self) -> dict:
        return asdict(self)


def parse_name(name: str) -> tuple[str, list[int]]:
    """``xlsr-300m-l5+21`` -> (hub id, [5, 21])."""
    m = _NAME.fullmatch(name)
    if not m:
        raise ValueError(f"teacher {name!r} is not of the form xlsr-<300m|1b|2b>-l<L>[+<L2>]")
    layers = [int(m["a"])] + ([int(m["b"])] if m["b"] else [])
    return HUB_IDS[m["size"]], layers


class SslFeatures(nn.Module):
    """A Wav2Vec2 encoder truncated after its highest used block; returns the used blocks' outputs."""

    def __init__(self, backbone: str | Path, layers: list[int], finetune_top: int = 0,
                 backbone_config: dict | None = None):
        super().__init__()
        transformers = extras.require("transformers", "the XLS-R teacher")
        Wav2Vec2Config, Wav2Vec2Model = transformers.Wav2Vec2Config, transformers.Wav2Vec2Model

        if not layers or len(layers) > 2 or min(layers) < 0:
            raise ValueError(f"layers={layers}: give one or two block indices >= 0")
        if backbone_config is not None:
            self.model = Wav2Vec2Model(Wav2Vec2Config.from_dict(backbone_config))
        else:
            self.model = Wav2Vec2Model.from_pretrained(str(backbone))
        n_blocks = len(self.model.encoder.layers)
        if max(layers) > n_blocks:
            raise ValueError(f"layer {max(layers)} requested but {backbone} has {n_blocks} encoder blocks")
        keep = max(max(layers), 1)  # layer 0 is the input of block 1: keep that block to hook it
        self.model.encoder.layers = self.model.encoder.layers[:keep]
        self.model.config.num_hidden_layers = keep
        self.layers = list(layers)
        self.dim = self.model.config.hidden_size
        self._captured: dict[int, Tensor] = {}
        for layer in set(layers):
            if layer == 0:
                self.model.encoder.layers[0].register_forward_pre_hook(self._pre_hook)
            else:
                self.model.encoder.layers[layer - 1].register_forward_hook(functools.partial(self._hook, layer))
        self.set_trainable(finetune_top)

    def _pre_hook(self, module, args):
        self._captured[0] = args[0]

    def _hook(self, layer: int, module, args, output):
        # a bound method (in a partial), not a closure: copy.deepcopy rebinds it to the copy
        self._captured[layer] = output[0] if isinstance(output, tuple) else output

    def set_trainable(self, finetune_top: int) -> None:
        """Freeze everything except the top ``finetune_top`` kept blocks."""
        for p in self.model.parameters():
            p.requires_grad = False
        blocks = self.model.encoder.layers
        for block in list(blocks)[len(blocks) - finetune_top:] if finetune_top else []:
            for p in block.parameters():
                p.requires_grad = True

    def forward(self, wave: Tensor) -> list[Tensor]:
        """(B, T) 16 kHz -> one (B, frames, dim) tensor per requested layer."""
        x = (wave - wave.mean(dim=1, keepdim=True)) / torch.sqrt(wave.var(dim=1, keepdim=True, unbiased=False) + 1e-7)
        self._captured = {}
        self.model(x)
        return [self._captured[layer] for layer in self.layers]


class FeaturesAndHead(nn.Module):
    """``features`` (wave -> list of layer outputs) followed by an XLS-R-SQA ``head``."""

    def forward_features(self, feats: list[Tensor]) -> Tensor:
        """MOS from cached features: random crops while training, windows at inference."""
        feats = feats[0] if len(feats) == 1 else feats
        if self.training:
            return self.head(crop_features(feats, self.head.config.feat_seq_len, mode="random"))
        return predict_long(self.head, feats)

    def forward(self, wave: Tensor) -> Tensor:
        if self.training or wave.shape[-1] <= WHOLE_CLIP_MAX_S * SAMPLE_RATE:
            return self.forward_features(self.features(wave))
        return self._forward_chunked(wave)

    def _forward_chunked(self, wave: Tensor) -> Tensor:
        """MOS of a long clip from chunks of ``WHOLE_CLIP_MAX_S`` (the last one up to 1.5 times that):
        the mean over all the head's windows of every chunk, so memory is bounded for any length."""
        step = int(WHOLE_CLIP_MAX_S * SAMPLE_RATE)
        bounds = list(range(0, wave.shape[-1], step)) + [wave.shape[-1]]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < step // 2:
            del bounds[-2]  # a short tail joins the chunk before it
        total, count = 0.0, 0
        for a, b in zip(bounds[:-1], bounds[1:]):
            feats = self.features(wave[:, a:b])
            k = len(window_starts(feats[0].shape[1], self.head.config.feat_seq_len, FRAME_RATE))  # hop 1 s
            total = total + k * self.forward_features(feats)
            count += k
        return total / count


class XlsrTeacher(FeaturesAndHead):
    """SSL features -> SqaHead; ``forward(wave) -> MOS (B,)`` with windowing for long clips."""

    arch = "xlsr-teacher"

    def __init__(self, config: TeacherConfig):
        super().__init__()
        self.config = config
        self.features = SslFeatures(config.backbone, config.layers, config.finetune_top, config.backbone_config)
        head_cfg = {"fusion": len(config.layers) == 2, **config.head, "dim_input": self.features.dim}
        self.head = SqaHead(HeadConfig(**head_cfg))

    def checkpoint_config(self) -> dict:
        cfg = self.config.to_dict()
        backbone = self.features.model.config.to_dict()
        cfg["backbone_config"] = {k: v for k, v in backbone.items() if k not in ("id2label", "label2id")}
        cfg["head"] = asdict(self.head.config)
        return cfg


@checkpoint.register(XlsrTeacher.arch)
def _build(config: dict) -> XlsrTeacher:
    """The checkpoint builder: the backbone is rebuilt from the checkpoint's own
    ``backbone_config``, never fetched from the hub id or folder the file names (a file can name
    anything); a checkpoint without one is loaded through :func:`load` with an explicit backbone."""
    if not isinstance(config.get("backbone_config"), dict):
        raise checkpoint.CheckpointError(
            f"teacher checkpoint has no backbone_config (it names backbone {config.get('backbone')!r}); "
            "refusing to load a backbone the file names. If you trust that backbone, pass it yourself: "
            "sqa.models.teacher.load(path, backbone=<hub id or folder>)")
    return XlsrTeacher(TeacherConfig(**config))


def load(path: Path | str, backbone: str | Path | None = None,
         map_location: str | torch.device = "cpu") -> XlsrTeacher:
    """A teacher checkpoint, rebuilt from the file alone, or (``backbone`` given) with the
    architecture of the caller's backbone (hub id or folder: only its config is read) in place
    of the file's ``backbone_config``. Either way the sizes are checked against the file's tensor
    shapes before the model is allocated, and every weight comes from the file."""
    info, shapes = checkpoint.read_shapes(path)
    if info.arch != XlsrTeacher.arch:
        raise checkpoint.CheckpointError(f"{path}: arch {info.arch!r} is not a teacher ({XlsrTeacher.arch!r})")
    if backbone is None:
        model = checkpoint.build_checked(Path(path), info, shapes, _build, info.config)
    else:
        Wav2Vec2Config = extras.require("transformers", "the XLS-R teacher").Wav2Vec2Config
        given = Wav2Vec2Config.from_pretrained(str(backbone)).to_dict()
        config = {**info.config, "backbone": str(backbone), "backbone_config": given}
        model = checkpoint.build_checked(Path(path), info, shapes, _build, config)
    return checkpoint.load_weights(path, model, map_location)


def tiny_backbone(folder: Path | str, seed: int = 0, layers: int = 4, hidden: int = 32) -> Path:
    """A randomly initialised XLS-R-shaped Wav2Vec2 (stable layer norm, 50 frames/s) saved with
    ``save_pretrained``: the smoke profile's stand-in for a hub download, loaded by the same path."""
    transformers = extras.require("transformers", "the XLS-R teacher")
    Wav2Vec2Config, Wav2Vec2Model = transformers.Wav2Vec2Config, transformers.Wav2Vec2Model

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(seed)
    cfg = Wav2Vec2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=2 * hidden, conv_dim=(16, 16, 16, 16),
                         conv_stride=(5, 4, 4, 4), conv_kernel=(10, 8, 8, 8),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                         feat_extract_norm="layer", do_stable_layer_norm=True,
                         hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                         feat_proj_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0)
    with atomic.atomic_dir(folder) as tmp:
        Wav2Vec2Model(cfg).save_pretrained(tmp)
    return folder
