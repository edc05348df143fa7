"""FaceCNN: a small VGG-style network that classifies a grey face crop into the 7 LABELS.

Plain PyTorch, built from its config alone (the constructor never downloads anything). The
preprocessing the network was trained with lives here too (``prepare``, and training's random
views ``random_view``), so the video pipeline and the evaluator feed the network exactly what
training fed it.

Shape of the network (defaults): four stages of two 3x3 conv+BN+ReLU blocks, widths
32/64/128/256, 2x2 max-pool between stages (40 -> 20 -> 10 -> 5), global average pool, dropout,
a linear layer to ``embed_dim`` (the embedding the fusion head consumes) and a linear classifier.
Logits come out in ``pipeline.labels.LABELS`` order (training remaps FER2013's class order).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emotion_pipeline.labels import NUM_LABELS


@dataclass(frozen=True)
class FaceCNNConfig:
    # FER2013 images are 48x48; the net sees ``input_size`` px. Training takes random
    # ``input_size`` crops of the 48 px image, inference resizes the face to 48 (``source_size``)
    # and takes the centre crop, so a face fills the same fraction of the input in both.
    source_size: int = 48
    input_size: int = 40
    in_channels: int = 1            # grey, as FER2013 is
    # Pixel statistics of FER2013 Training (uint8 scaled to [0, 1]), measured over all 28,709
    # images: mean 0.5136, std 0.3067 (rounded).
    mean: float = 0.514
    std: float = 0.307
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels per stage; a 2x2 pool follows each but the last
    convs_per_stage: int = 2        # VGG-style pairs of 3x3 convs
    embed_dim: int = 256            # width of the embedding handed to the fusion head
    dropout: float = 0.3            # before the embedding and the classifier; FER2013 overfits fast
    num_classes: int = NUM_LABELS   # 7, in LABELS order
    # An output ensemble (face-cnn 4.0.0): ``members`` networks of this shape in one file, their class
    # probabilities mixed with ``member_weights`` (normalised to sum 1); the embedding is the members'
    # embeddings side by side. 1: one network.
    members: int = 1
    member_weights: tuple[float, ...] = ()


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class FaceCNN(nn.Module):
    def __init__(self, config: FaceCNNConfig | None = None):
        super().__init__()
        if config is None:
            config = FaceCNNConfig()
        # a config rebuilt from JSON metadata carries lists
        config = replace(config, widths=tuple(config.widths), member_weights=tuple(config.member_weights))
        self.config = config
        if config.members > 1:
            w = config.member_weights
            if len(w) != config.members or min(w) < 0 or sum(w) <= 0:
                raise ValueError(f"FaceCNN ensemble: {config.members} members need as many non-negative "
                                 f"member_weights, got {w}")
            one = replace(config, members=1, member_weights=())
            self.nets = nn.ModuleList(FaceCNN(one) for _ in range(config.members))
            self.register_buffer("mix", torch.tensor(w, dtype=torch.float32) / sum(w), persistent=False)
            return
        layers: list[nn.Module] = []
        cin = config.in_channels
        for i, width in enumerate(config.widths):
            for _ in range(config.convs_per_stage):
                layers.append(_conv_bn_relu(cin, width))
                cin = width
            if i < len(config.widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed = nn.Sequential(nn.Flatten(), nn.Dropout(config.dropout),
                                   nn.Linear(cin, config.embed_dim), nn.BatchNorm1d(config.embed_dim),
                                   nn.ReLU(inplace=True))
        self.drop = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.embed_dim, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    @property
    def embedding_dim(self) -> int:
        return self.config.embed_dim * max(1, self.config.members)

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, in_channels, S, S) as made by ``prepare``; returns (logits (N,7), embedding
        (N, embedding_dim)). An ensemble's logits are the log of its mixed probabilities."""
        if self.config.members > 1:
            outs = [net.forward_with_embedding(x) for net in self.nets]
            probs = sum(w * torch.softmax(o[0].float(), 1) for w, o in zip(self.mix, outs))
            return torch.log(probs.clamp_min(1e-12)), torch.cat([o[1] for o in outs], 1)
        emb = self.embed(self.pool(self.features(x)))
        return self.classifier(self.drop(emb)), emb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_embedding(x)[0]


def _as_config(config: FaceCNNConfig | dict | None) -> FaceCNNConfig:
    if config is None:
        return FaceCNNConfig()
    if isinstance(config, dict):
        return FaceCNNConfig(**{**config, "widths": tuple(config.get("widths", FaceCNNConfig.widths)),
                                "member_weights": tuple(config.get("member_weights", ()))})
    return config


def normalise(images: torch.Tensor, config: FaceCNNConfig) -> torch.Tensor:
    """uint8 (N,1,H,W) tensor -> float32 standardised with the training statistics."""
    return (images.float() / 255.0 - config.mean) / config.std


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top:top + size, left:left + size]


def prepare(crops: np.ndarray, config: FaceCNNConfig | dict | None = None) -> torch.Tensor:
    """Grey uint8 face crops (N,H,W) (or one (H,W)) -> float32 tensor (N,1,S,S) ready for FaceCNN.

    Each crop is resized to ``source_size`` (48, FER2013's size; INTER_AREA when shrinking,
    INTER_LINEAR when enlarging), centre-cropped to ``input_size`` and standardised with the
    training mean/std, exactly as validation did during training.
    """
    config = _as_config(config)
    return center_view(to_source_size(crops, config), config)


def center_view(images: torch.Tensor, config: FaceCNNConfig) -> torch.Tensor:
    """uint8 (N,1,source_size,source_size) -> the standardised centre crop (N,1,S,S): the one view
    without test-time augmentation."""
    return normalise(center_crop(images, config.input_size), config).contiguous()


@dataclass(frozen=True)
class FaceAugment:
    """Training's random views of the source_size image (``random_view``)."""
    max_shift_px: float = 4.0       # of the input_size window, in source px
    max_rotate_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    erase_p: float = 0.5            # random erasing: the chance of one rectangle set to the mean grey
    erase_area: tuple[float, float] = (0.02, 0.15)  # its area, a fraction of the input's
    # Video-like degradations (0: off, as in face-cnn 1.x / 2.0.0): a face on camera is often
    # smaller, blurred by motion or focus and compressed, lit with other contrast than a photo.
    lowres_p: float = 0.0           # chance of being shrunk to lowres_px and enlarged back (lost detail)
    lowres_px: tuple[int, int] = (14, 32)
    blur_p: float = 0.0             # chance of a Gaussian blur, sigma in blur_sigma (source px)
    blur_sigma: tuple[float, float] = (0.4, 1.2)
    contrast: float = 0.0           # contrast gain in [1-c, 1+c] and brightness shift in [-c/2, c/2] std units


def random_view(images: torch.Tensor, config: FaceCNNConfig, augment: FaceAugment | None) -> torch.Tensor:
    """uint8 (N,1,source_size,source_size) -> standardised float (N,1,S,S): one random affine per
    image (shift, rotation, scale, a flip half the time) sampled straight at S px, then random
    erasing. Without ``augment``: the centre crop, exactly what ``prepare`` gives."""
    if augment is None:
        return center_view(images, config)
    a, x, n, s, full = augment, normalise(images, config), len(images), config.input_size, images.shape[-1]
    x = _degrade(x, a)
    ang = torch.empty(n).uniform_(-a.max_rotate_deg, a.max_rotate_deg) * math.pi / 180
    k = (s / full) / torch.empty(n).uniform_(*a.scale_range)  # output [-1,1] covers s px of the image, zoomed
    flip = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
    shift = torch.empty(n, 2).uniform_(-a.max_shift_px, a.max_shift_px) * 2 / full
    cos, sin = k * torch.cos(ang), k * torch.sin(ang)
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, s, s), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # pad = mean grey
    # random erasing: one rectangle per chosen image set to 0 (= the mean after normalisation)
    area = torch.empty(n).uniform_(*a.erase_area) * s * s
    aspect = torch.exp(torch.empty(n).uniform_(math.log(0.5), math.log(2.0)))
    h, w = (side.sqrt().clamp(2, s).long().view(-1, 1, 1) for side in (area * aspect, area / aspect))
    top, left = ((torch.rand(n).view(-1, 1, 1) * (s - size + 1).float()).long() for size in (h, w))
    r = torch.arange(s)
    box = (r.view(s, 1) >= top) & (r.view(s, 1) < top + h) & (r >= left) & (r < left + w)
    return x.masked_fill((box & (torch.rand(n) < a.erase_p).view(-1, 1, 1))[:, None], 0.0).contiguous()


def _chosen(n: int, p: float) -> torch.Tensor:
    return (torch.rand(n) < p).view(-1, 1, 1, 1)


def _degrade(x: torch.Tensor, a: FaceAugment) -> torch.Tensor:
    """FaceAugment's video-like degradations of standardised images (N,1,H,W); a no-op when off."""
    n, full = len(x), x.shape[-1]
    if a.lowres_p > 0:
        px = int(torch.randint(a.lowres_px[0], a.lowres_px[1] + 1, ()))   # one size per batch
        low = F.interpolate(F.interpolate(x, size=(px, px), mode="area"), size=(full, full),
                            mode="bilinear", align_corners=False)
        x = torch.where(_chosen(n, a.lowres_p), low, x)
    if a.blur_p > 0:
        sigma = float(torch.empty(()).uniform_(*a.blur_sigma))            # one sigma per batch
        r = torch.arange(-2, 3, dtype=torch.float32)
        k = torch.exp(-r ** 2 / (2 * sigma ** 2))
        k = k / k.sum()
        blurred = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5))
        blurred = F.conv2d(F.pad(blurred, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1))
        x = torch.where(_chosen(n, a.blur_p), blurred, x)
    if a.contrast > 0:
        gain = torch.empty(n, 1, 1, 1).uniform_(1 - a.contrast, 1 + a.contrast)
        shift = torch.empty(n, 1, 1, 1).uniform_(-a.contrast / 2, a.contrast / 2)
        x = x * gain + shift
    return x


def to_source_size(crops: np.ndarray, config: FaceCNNConfig | dict | None = None) -> torch.Tensor:
    """Grey uint8 crops (N,H,W) or one (H,W) -> uint8 tensor (N,1,source_size,source_size)."""
    config = _as_config(config)
    crops = np.asarray(crops)
    if crops.ndim == 2:
        crops = crops[None]
    if crops.ndim == 4 and crops.shape[-1] in (1, 3):  # tolerate (N,H,W,1) / BGR by converting to grey
        crops = np.stack([c[..., 0] if c.shape[-1] == 1 else cv2.cvtColor(c, cv2.COLOR_BGR2GRAY) for c in crops])
    if crops.ndim != 3:
        raise ValueError(f"prepare: expected grey crops (N,H,W), got shape {crops.shape}")
    if crops.dtype != np.uint8:
        crops = np.clip(crops, 0, 255).astype(np.uint8)
    s = config.source_size
    if crops.shape[1:] == (s, s):
        return torch.from_numpy(np.ascontiguousarray(crops))[:, None]
    out = np.empty((len(crops), s, s), dtype=np.uint8)
    for i, crop in enumerate(crops):
        interp = cv2.INTER_AREA if min(crop.shape) > s else cv2.INTER_LINEAR
        out[i] = cv2.resize(np.ascontiguousarray(crop), (s, s), interpolation=interp)
    return torch.from_numpy(out)[:, None]


# Test-time augmentation views of a batch of 48 px images (uint8 (N,1,48,48) tensor):
# "flip" = centre crop + its mirror; "crops10" = the four corner crops, the centre crop and
# their mirrors (the classic 10-crop). Logits (and embeddings) are averaged over views.
TTA_MODES = (None, "flip", "crops10")


def tta_mode(name: str | None) -> str | None:
    """A TTA setting as a command line gives it ("none" or "" for None) -> one of TTA_MODES;
    ValueError for any other."""
    tta = None if name in ("", "none") else name
    if tta not in TTA_MODES:
        raise ValueError(f"unknown tta {tta!r}; choose from {', '.join(str(m) for m in TTA_MODES)}")
    return tta


def tta_views(images: torch.Tensor, config: FaceCNNConfig, mode: str | None) -> list[torch.Tensor]:
    if mode not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {mode!r}; choose from {TTA_MODES}")
    s, full = config.input_size, images.shape[-1]
    crops = [center_crop(images, s)]
    if mode == "crops10":
        d = full - s
        crops += [images[..., t:t + s, l:l + s] for t, l in ((0, 0), (0, d), (d, 0), (d, d))]
    if mode in ("flip", "crops10"):
        crops += [torch.flip(c, dims=[-1]) for c in crops]
    return [normalise(c, config).contiguous() for c in crops]


# TTA the pipeline uses by default (pipeline.encoders.ShippedFace). Measured on FER2013 PublicTest
# (models/weights/face_cnn.md): face-cnn 1.2.0, FER2013 labels: flip +1.2 points accuracy and +1.9
# macro F1 for 1.9x the CNN time (exact McNemar p = 0.005); face-cnn 2.0.0, FER+ majority labels:
# flip +0.3 points accuracy and +2.1 macro F1, 10-crop no better than the centre crop.
DEFAULT_TTA: str | None = "flip"


# Precision of the face CNN at inference. bfloat16 (autocast) halves the CNN's time on a CPU that
# computes it natively (AMX or AVX512-BF16: Sapphire Rapids and later, Zen 4 and later): 3.4 vs 6.6
# ms per crop with the flip TTA on this project's 2-core CI machine. Without that hardware oneDNN
# emulates it, so "auto" keeps float32 there. The two agree on the label of every validation face
# but one (models/weights/face_cnn.md, "Precision"); training and its validation stay float32.
PRECISIONS = ("auto", "float32", "bfloat16")


def native_bf16() -> bool:
    """True where this CPU computes bfloat16 matrix products natively (AMX tiles or AVX512-BF16)."""
    cpu = getattr(torch, "cpu", None)
    checks = (getattr(cpu, "_is_amx_tile_supported", None), getattr(cpu, "_is_avx512_bf16_supported", None))
    return any(bool(c()) for c in checks if c is not None)


def resolve_precision(name: str, device: torch.device | str = "cpu") -> str:
    """A PRECISIONS setting -> the precision used: "auto" is bfloat16 on a CPU with native bfloat16,
    float32 elsewhere (a GPU included: the CNN is a small part of a GPU run)."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose from {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bfloat16" if torch.device(device).type == "cpu" and native_bf16() else "float32"
    return name


@torch.no_grad()
def predict(model: FaceCNN, crops: np.ndarray | torch.Tensor, tta: str | None = DEFAULT_TTA, *,
            batch_size: int | None = None, precision: str = "float32") -> tuple[torch.Tensor, torch.Tensor]:
    """Face crops -> (logits (N,7) in LABELS order, embedding (N,embedding_dim)), float32 on the CPU,
    both averaged over the TTA views; the one face inference of the video pipeline, ``evaluate``,
    ``predict`` and training's validation. ``crops``: grey (or BGR) uint8 crops (N,H,W) of any
    size, brought to 48 px by ``to_source_size``, or a uint8 tensor (N,1,48,48) as it is;
    ``batch_size`` faces at a time through the network (None: all at once), the TTA views of a
    batch in one pass; ``precision``: float32 or bfloat16 (autocast; see PRECISIONS). Model in eval mode."""
    images = crops if isinstance(crops, torch.Tensor) else to_source_size(crops, model.config)
    device, cl = next(model.parameters()).device, torch.channels_last  # 1.5x faster convs on CPU (oneDNN), same results
    precision = resolve_precision(precision, device)
    logits, embs = [torch.zeros(0, model.config.num_classes)], [torch.zeros(0, model.embedding_dim)]
    step = batch_size or max(1, len(images))
    for i in range(0, len(images), step):
        views = tta_views(images[i:i + step], model.config, tta)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            out, emb = model.forward_with_embedding(torch.cat(views).to(device, memory_format=cl))
        logits.append(out.float().reshape(len(views), -1, out.shape[-1]).mean(0).cpu())
        embs.append(emb.float().reshape(len(views), -1, emb.shape[-1]).mean(0).cpu())
    return torch.cat(logits), torch.cat(embs)


def predict_logits(model: FaceCNN, crops: np.ndarray | torch.Tensor, tta: str | None = None, *,
                   batch_size: int | None = None, precision: str = "float32") -> torch.Tensor:
    """The logits of ``predict`` (no TTA by default)."""
    return predict(model, crops, tta, batch_size=batch_size, precision=precision)[0]


def ensemble_of(members: list[tuple[FaceCNNConfig, dict[str, torch.Tensor]]], weights: list[float]) -> FaceCNN:
    """Single networks (config, state dict) of one shape -> their output ensemble
    (``FaceCNNConfig.members``, mixed with ``weights``), weights loaded, in eval mode."""
    shapes = {replace(c, members=1, member_weights=()) for c, _ in members}
    if len(shapes) != 1 or any(c.members != 1 for c, _ in members):
        raise ValueError("an ensemble is made of single networks of one config")
    if len(weights) != len(members):
        raise ValueError(f"{len(members)} members, {len(weights)} weights")
    model = FaceCNN(replace(shapes.pop(), members=len(members), member_weights=tuple(float(w) for w in weights)))
    model.load_state_dict({f"nets.{i}.{k}": v for i, (_, sd) in enumerate(members) for k, v in sd.items()})
    return model.eval()
