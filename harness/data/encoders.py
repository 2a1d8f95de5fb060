"""Frozen vision encoders: uint8 frames ``(T, H, W, 3)`` -> float32 patch features ``(T, P, D)``.

* ``tiny`` (offline default): deterministic patch features, no learning, no download. Frames are resized
  to ``image_size``, cut into ``patch_size`` patches (P = (image_size / patch_size)^2) and each patch is
  described by its mean colour (3 dims) and ``tanh`` of a fixed seeded random projection of its pixels
  (D - 3 dims), plus a small fixed 2-D sin-cos position code (like a ViT's features carry position).
* ``siglip`` / ``clip``: a transformers ``SiglipVisionModel`` / ``CLIPVisionModel``, loaded with
  ``from_pretrained(name_or_path)`` or, when ``name_or_path`` is empty, built with random weights
  (seeded) from ``EncoderConfig.config`` (a ``SiglipVisionConfig`` / ``CLIPVisionConfig`` kwargs dict).
  Features are the hidden states of layer ``feature_layer`` (LLaVA uses -2); CLIP's CLS token is dropped.

Every encoder has an ``encoder_id`` (what it is and how it preprocesses) and a ``weights_hash`` (sha256
of its parameters): together they key the feature cache, so changing either invalidates cached features.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import math
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from harness.config import SALIENCY_SOURCES, EncoderConfig, check_choice

ENCODER_NAMES = ("tiny", "siglip", "clip")
_TINY_CONFIG_KEYS = ("pos_scale", "features")
TINY_FEATURES = ("objects", "pixels")
_HUE_BINS = 6


class FrozenEncoder(nn.Module):
    """Base class. Subclasses set ``encoder_id``, ``weights_hash``, ``num_patches``, ``dim``,
    ``image_size`` and implement :meth:`_encode` on float frames in [0, 1] of shape (T, 3, S, S).

    ``saliency_source`` names the encoder's own attention over the patches that training-free reducers read
    (:meth:`encode_saliency`); None when the encoder has none (they then use the token L2 norm)."""

    encoder_id: str
    weights_hash: str
    num_patches: int
    dim: int
    image_size: int
    saliency_source: str | None = None

    def __init__(self, batch_size: int = 64, device: str = "cpu"):
        super().__init__()
        self.batch_size = batch_size
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self._device

    def train(self, mode: bool = True) -> FrozenEncoder:  # frozen: always eval
        return super().train(False)

    def _preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"{self.encoder_id}: frames must be uint8 (T, H, W, 3), "
                             f"got {frames.dtype} {tuple(frames.shape)}")
        x = frames.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True).clamp_(0, 1)
        return x

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` -> float32 ``(T, P, D)`` on the CPU."""
        outs = []
        for i in range(0, frames.shape[0], self.batch_size):
            x = self._preprocess(frames[i:i + self.batch_size]).to(self._device)
            outs.append(self._encode(x).float().cpu())
        return torch.cat(outs, 0) if outs else torch.zeros(0, self.num_patches, self.dim)

    @torch.no_grad()
    def encode_on_device(self, frames: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` (any device) -> ``(N, P, D)`` in ``dtype`` on the encoder's device,
        ``batch_size`` frames per forward: the training loop's online path (bf16 autocast on CUDA; the
        uint8 frames cross to the GPU, not float32 pixels)."""
        outs = []
        amp = dtype != torch.float32 and self._device.type == "cuda"
        for i in range(0, frames.shape[0], self.batch_size):
            x = self._preprocess(frames[i:i + self.batch_size].to(self._device, non_blocking=True))
            with torch.autocast("cuda", dtype=dtype, enabled=amp):
                outs.append(self._encode(x).to(dtype))
        return torch.cat(outs, 0) if outs else torch.zeros(0, self.num_patches, self.dim, dtype=dtype)

    @torch.no_grad()
    def encode_saliency(self, frames: torch.Tensor) -> torch.Tensor | None:
        """uint8 ``(T, H, W, 3)`` -> float32 ``(T, P)`` on the CPU: the encoder's attention from its pooling
        query to every patch (each row sums to 1), or None when :attr:`saliency_source` is None."""
        return self.encode_with_saliency(frames)[1] if self.saliency_source is not None else None

    @torch.no_grad()
    def encode_with_saliency(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 ``(T, H, W, 3)`` -> (float32 ``(T, P, D)`` features, float32 ``(T, P)`` saliency or None),
        both on the CPU from one forward per batch: the features equal :meth:`encode`'s bit for bit."""
        if self.saliency_source is None:
            return self.encode(frames), None
        feats, sal = [], []
        for i in range(0, frames.shape[0], self.batch_size):
            x = self._preprocess(frames[i:i + self.batch_size]).to(self._device)
            f, s = self._encode_and_saliency(x)
            feats.append(f.float().cpu())
            sal.append(s.float().cpu())
        if not feats:
            return torch.zeros(0, self.num_patches, self.dim), torch.zeros(0, self.num_patches)
        return torch.cat(feats, 0), torch.cat(sal, 0)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode_and_saliency(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        """(N, 3, S, S) -> ((N, P, D), (N, P)); only encoders with a :attr:`saliency_source` implement it."""
        raise NotImplementedError


def _sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position code ``(grid * grid, dim)``."""
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")
    quarter = max(1, dim // 4)
    freqs = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        ang = coord[:, None] * freqs[None] * math.pi / 2
        parts += [torch.sin(ang), torch.cos(ang)]
    pe = torch.cat(parts, 1)[:, :dim]
    if pe.shape[1] < dim:
        pe = F.pad(pe, (0, dim - pe.shape[1]))
    return pe.float()


def _tensor_hash(tensors: dict[str, torch.Tensor], extra: dict[str, Any] | None = None) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    if extra:
        h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()[:16]


class TinyPatchEncoder(FrozenEncoder):
    """Deterministic patch features (see module docstring). Output ``(T, (S/p)^2, D)``.

    ``features="objects"`` (default) stands in for a pretrained encoder, whose patch features make
    "what object is here" linearly readable: per patch, a saturation-weighted soft hue histogram
    (``_HUE_BINS`` dims, growing with the part of the patch that hue covers; zero on grey), ``tanh`` of a
    fixed random projection of the patch's map of vivid pixels (the shape; zero where nothing is vivid)
    and two tone dims (mean and spread of luminance: grey objects and texture). ``features="pixels"``:
    mean colour and a random projection of raw RGB pixels (no notion of objects: the constant
    background dominates every dimension).
    """

    def __init__(self, image_size: int = 64, patch_size: int = 8, dim: int = 64, seed: int = 0,
                 pos_scale: float = 0.25, features: str = "objects", batch_size: int = 256,
                 device: str = "cpu"):
        super().__init__(batch_size, device)
        check_choice("model.encoder.config.features", features, TINY_FEATURES)
        if image_size % patch_size:
            raise ValueError(f"encoder.image_size={image_size} is not divisible by patch_size={patch_size}")
        if dim < 8 + _HUE_BINS:
            raise ValueError(f"encoder.dim must be >= {8 + _HUE_BINS} for the tiny encoder, got {dim}")
        self.image_size, self.patch_size, self.dim, self.features = image_size, patch_size, dim, features
        self.grid = image_size // patch_size
        self.num_patches = self.grid * self.grid
        g = torch.Generator().manual_seed(seed)
        n_in = patch_size * patch_size * (3 if features == "pixels" else 1)
        n_out = dim - (3 if features == "pixels" else _HUE_BINS + 2)
        self.register_buffer("proj", torch.randn(n_in, n_out, generator=g) / math.sqrt(n_in))
        self.register_buffer("pos", _sincos_2d(self.grid, dim) * pos_scale)
        self.requires_grad_(False)
        suffix = "" if features == "pixels" else "-obj"
        self.encoder_id = f"tiny-s{image_size}-p{patch_size}-d{dim}{suffix}"
        self.weights_hash = _tensor_hash({"proj": self.proj, "pos": self.pos})
        self.to(self._device)

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """(T, C, S, S) -> (T, P, C, p*p)."""
        T, C = x.shape[:2]
        p = self.patch_size
        return F.unfold(x, kernel_size=p, stride=p).transpose(1, 2).reshape(T, self.num_patches, C, p * p)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[0]
        if self.features == "pixels":
            patches = self._patches(x * 2 - 1)  # (T, P, 3, p*p) in [-1, 1]
            mean_rgb = patches.mean(-1)  # (T, P, 3)
            proj = torch.tanh(patches.reshape(T, self.num_patches, -1) @ self.proj)  # (T, P, D-3)
            return torch.cat([mean_rgb, proj], -1) + self.pos
        # HSV per pixel: value, saturation, hue angle
        mx, mn = x.max(1).values, x.min(1).values  # (T, S, S)
        sat = (mx - mn) / mx.clamp(min=1e-6)
        r, g_, b = x.unbind(1)
        hue = torch.atan2(math.sqrt(3) * (g_ - b), 2 * r - g_ - b)  # (T, S, S), radians, red = 0
        vivid = (sat - 0.3).clamp(min=0) / 0.7 * mx  # ~0 on the grey background and grey clutter
        centres = torch.arange(_HUE_BINS, device=x.device, dtype=x.dtype) * (2 * math.pi / _HUE_BINS)
        soft = torch.cos(hue[:, None] - centres[None, :, None, None]).clamp(min=0) ** 4  # (T, bins, S, S)
        hist = self._patches(soft * vivid[:, None]).mean(-1) * 4  # (T, P, bins), 4 for a patch of one vivid hue
        shape = torch.tanh(self._patches(vivid[:, None])[:, :, 0] @ self.proj)  # (T, P, D-bins-2); 0: nothing vivid
        luma = self._patches((0.299 * r + 0.587 * g_ + 0.114 * b)[:, None])[:, :, 0]  # (T, P, p*p)
        tone = torch.stack([luma.mean(-1) * 4 - 1, luma.std(-1) * 4], -1)  # (T, P, 2): grey blobs, texture
        return torch.cat([hist, shape, tone], -1) + self.pos


_HF_MEAN_STD = {
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


class HFVisionEncoder(FrozenEncoder):
    """A transformers SigLIP / CLIP vision tower (frozen). Output ``(T, (S/p)^2, hidden_size)``."""

    def __init__(self, cfg: EncoderConfig, device: str = "cpu"):
        super().__init__(cfg.batch_size, device)
        if cfg.name == "siglip":
            model_cls, config_cls = transformers.SiglipVisionModel, transformers.SiglipVisionConfig
        else:
            model_cls, config_cls = transformers.CLIPVisionModel, transformers.CLIPVisionConfig
        if cfg.name_or_path:
            model = model_cls.from_pretrained(cfg.name_or_path, **cfg.config)
            source = cfg.name_or_path
        else:
            known = set(config_cls().to_dict()) | set(inspect.signature(config_cls.__init__).parameters)
            unknown = sorted(set(cfg.config) - known)
            if unknown:
                hints = {k: difflib.get_close_matches(k, sorted(known), n=1) for k in unknown}
                detail = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
                raise ValueError(f"model.encoder.config: unknown {config_cls.__name__} keys: {detail}")
            try:
                hf_cfg = config_cls(**cfg.config)
            except (TypeError, ValueError) as e:
                raise ValueError(f"model.encoder.config: not a valid {config_cls.__name__}: {e}") from e
            torch.manual_seed(cfg.seed)
            model = model_cls(hf_cfg)
            source = "random-init"
        model.eval().requires_grad_(False)
        self.model = model.to(self._device)
        c = model.config
        self.image_size, self.patch_size, self.dim = int(c.image_size), int(c.patch_size), int(c.hidden_size)
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.feature_layer = cfg.feature_layer
        self.drop_cls = cfg.name == "clip"
        mean, std = _HF_MEAN_STD[cfg.name]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1).to(self._device))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1).to(self._device))
        self.encoder_id = (f"{cfg.name}:{source}-s{self.image_size}-p{self.patch_size}-d{self.dim}"
                           f"-L{self.feature_layer}")
        self.weights_hash = _tensor_hash(dict(model.state_dict()))
        # SigLIP's multihead-attention pooling head (MAP; `vision_use_head`, on in the released towers): its
        # probe's attention over the patches is the encoder's own saliency, which VisionZip-style reducers read
        if cfg.name == "siglip" and self._map_head() is not None:
            self.saliency_source = SALIENCY_SOURCES["siglip"]

    def _map_head(self) -> nn.Module | None:
        m = self.model  # transformers 5: the head on the model; 4.x: on its vision_model
        head = getattr(m, "head", None)
        return head if head is not None else getattr(getattr(m, "vision_model", None), "head", None)

    def _forward(self, x: torch.Tensor) -> Any:
        x = (x - self.mean) / self.std
        return self.model(pixel_values=x.to(next(self.model.parameters()).dtype), output_hidden_states=True)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(self._forward(x))

    def _features(self, out: Any) -> torch.Tensor:
        h = out.hidden_states[self.feature_layer]
        if self.drop_cls:
            h = h[:, 1:]
        return h

    def _encode_and_saliency(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, S, S) -> ((N, P, D) features, (N, P) saliency) from one tower forward. The saliency is the
        MAP head's probe attention over the post-layernorm last hidden state (what the head pools with),
        averaged over its heads: one extra attention call of one query, the head's own."""
        out = self._forward(x)
        last = out.last_hidden_state  # (N, P, D), after post_layernorm
        head = self._map_head()
        probe = head.probe.expand(last.shape[0], -1, -1)  # (N, 1, D)
        _, w = head.attention(probe, last, last, need_weights=True, average_attn_weights=True)  # (N, 1, P)
        return self._features(out), w[:, 0]


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def build_encoder(cfg: EncoderConfig) -> FrozenEncoder:
    """Build the frozen encoder named by ``cfg.name`` (see module docstring). Raises ConfigError /
    ValueError naming the ``model.encoder`` key for bad settings."""
    check_choice("model.encoder.name", cfg.name, ENCODER_NAMES)
    device = _resolve_device(cfg.device)
    if cfg.name == "tiny":
        unknown = set(cfg.config) - set(_TINY_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"model.encoder.config: unknown keys {sorted(unknown)} for the tiny encoder; "
                             f"allowed: {', '.join(_TINY_CONFIG_KEYS)}")
        if cfg.name_or_path:
            raise ValueError("model.encoder.name_or_path: the tiny encoder has no weights to load")
        return TinyPatchEncoder(cfg.image_size, cfg.patch_size, cfg.dim, seed=cfg.seed,
                                pos_scale=float(cfg.config.get("pos_scale", 0.25)),
                                features=str(cfg.config.get("features", "objects")),
                                batch_size=cfg.batch_size, device=device)
    return HFVisionEncoder(cfg, device=device)


__all__ = ["FrozenEncoder", "TinyPatchEncoder", "HFVisionEncoder", "build_encoder", "ENCODER_NAMES", "SALIENCY_SOURCES"]
