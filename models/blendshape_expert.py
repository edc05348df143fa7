"""The second face expert (the blendshape expert): expression coefficients and landmark geometry -> the 7 labels.

Input: what MediaPipe FaceLandmarker reads in a face crop (``pipeline.landmarks``): 52 blendshapes
and 478 landmarks. ``features(blendshapes, landmarks)`` turns them into one vector per face, the
expert's input contract (``FEATURES`` names it; the weight file records it):

- the 52 blendshapes as they come (each in [0, 1]);
- GEOMETRY_POINTS landmarks aligned by the eyes: origin between the eye centres, the eyes on the
  x axis, the inter-ocular distance 1 (so position, in-plane rotation and scale are gone), x and y
  of each;
- DISTANCES between landmark pairs (mouth width and opening, lids, brow to eye, brow to brow,
  nose to lip), in inter-ocular units.

``BlendshapeExpert`` standardises the vector (training mean / std, buffers saved with the weights)
and maps it to logits: logistic regression (``hidden: 0``) or a one-hidden-layer MLP.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from emotion_pipeline.labels import NUM_LABELS

FEATURES = "blendshapes52+eye-aligned-geometry-v1"
N_BLENDSHAPES = 52

# MediaPipe face mesh indices (canonical_face_model_uv_visualization.png). "Right" is the
# subject's right (the image's left).
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (362, 263)
GEOMETRY_POINTS = (
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,        # brows, outer to inner, right then left
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,   # eye contours (corners, upper, lower lids)
    168, 6, 1, 98, 327, 2,                                 # nose bridge, tip, wings, base
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,    # outer lips
    78, 81, 13, 311, 308, 402, 14, 178,                    # inner lips
    152, 176, 400, 172, 397, 234, 454, 10,                 # chin, jaw, cheeks, forehead
)
DISTANCES = (
    (61, 291),     # mouth width
    (13, 14),      # inner lip opening
    (0, 17),       # outer lip height
    (159, 145),    # right eye opening
    (386, 374),    # left eye opening
    (105, 159),    # right brow to upper lid
    (334, 386),    # left brow to upper lid
    (107, 336),    # inner brows apart
    (2, 0),        # nose base to upper lip
    (1, 152),      # nose tip to chin
    (61, 152),     # right mouth corner to chin
    (291, 152),    # left mouth corner to chin
)
N_FEATURES = N_BLENDSHAPES + 2 * len(GEOMETRY_POINTS) + len(DISTANCES)


def aligned(landmarks: np.ndarray) -> np.ndarray:
    """(N, 478, 2) x, y of ``landmarks`` (N, 478, 2|3) aligned by the eyes (module docstring)."""
    xy = np.asarray(landmarks, dtype=np.float64)[..., :2]
    right = xy[:, list(RIGHT_EYE_CORNERS)].mean(1)
    left = xy[:, list(LEFT_EYE_CORNERS)].mean(1)
    centre, axis = (right + left) / 2, left - right
    scale = np.maximum(np.linalg.norm(axis, axis=1), 1e-6)
    cos, sin = axis[:, 0] / scale, axis[:, 1] / scale
    d = xy - centre[:, None]
    x = (d[..., 0] * cos[:, None] + d[..., 1] * sin[:, None]) / scale[:, None]
    y = (-d[..., 0] * sin[:, None] + d[..., 1] * cos[:, None]) / scale[:, None]
    return np.stack([x, y], axis=-1)


def features(blendshapes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """float32 (N, N_FEATURES) from blendshapes (N, 52) and landmarks (N, 478, 3)."""
    blendshapes = np.asarray(blendshapes, dtype=np.float32).reshape(-1, N_BLENDSHAPES)
    if len(blendshapes) == 0:
        return np.zeros((0, N_FEATURES), np.float32)
    xy = aligned(landmarks)
    points = xy[:, list(GEOMETRY_POINTS)].reshape(len(xy), -1)
    a, b = (np.asarray(i) for i in zip(*DISTANCES))
    dists = np.linalg.norm(xy[:, a] - xy[:, b], axis=-1)
    return np.concatenate([blendshapes, points, dists], axis=1).astype(np.float32)


@dataclass(frozen=True)
class BlendshapeExpertConfig:
    n_features: int = N_FEATURES
    features: str = FEATURES     # the feature definition the weights were trained on
    hidden: int = 64             # 0: logistic regression; else one hidden layer of this width
    dropout: float = 0.2
    num_classes: int = NUM_LABELS


class BlendshapeExpert(nn.Module):
    def __init__(self, config: BlendshapeExpertConfig = BlendshapeExpertConfig()):
        super().__init__()
        if config.features != FEATURES or config.n_features != N_FEATURES:
            raise ValueError(f"expression expert features {config.features!r} ({config.n_features}): this code "
                             f"computes {FEATURES!r} ({N_FEATURES})")
        self.config = config
        self.register_buffer("mean", torch.zeros(config.n_features))
        self.register_buffer("std", torch.ones(config.n_features))
        if config.hidden:
            self.net = nn.Sequential(nn.Linear(config.n_features, config.hidden), nn.GELU(),
                                     nn.Dropout(config.dropout), nn.Linear(config.hidden, config.num_classes))
        else:
            self.net = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.n_features, config.num_classes))

    def set_standardisation(self, x: torch.Tensor) -> None:
        """Mean and std of the training features (N, n_features)."""
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """features (N, n_features) -> logits (N, num_classes)."""
        return self.net((x - self.mean) / self.std)


def predict_probs(model: BlendshapeExpert, feats: np.ndarray) -> np.ndarray:
    """float32 (N, 7) probabilities of ``feats`` (N, n_features)."""
    if len(feats) == 0:
        return np.zeros((0, model.config.num_classes), np.float32)
    with torch.inference_mode():
        logits = model(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)))
    return torch.softmax(logits.float(), -1).numpy()


# The face modality's probability combination of the CNN and this expert; its weight is chosen on
# people of a training fold (pipeline.train.blendshape), never on the held-out ones.
WEIGHT_GRID = tuple(round(0.05 * i, 2) for i in range(21))   # 0 (the CNN alone) .. 1 (the expert alone)


def combine(cnn: np.ndarray, expert: np.ndarray, found: np.ndarray, weight: float) -> np.ndarray:
    """(N, 7) ``(1 - weight) * cnn + weight * expert`` where the landmarker read the face
    (``found``, bool (N,)), ``cnn`` elsewhere."""
    out = np.array(cnn, dtype=np.float32, copy=True)
    out[found] = (1 - weight) * out[found] + weight * np.asarray(expert, dtype=np.float32)[found]
    return out


def choose_weight(sets: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> tuple[float, list[float]]:
    """(the WEIGHT_GRID weight with the best mean accuracy, the mean accuracy at each weight) over
    ``sets``: (cnn (N,7), expert (N,7), found (N,), labels (N,)) per labelled set."""
    by_weight = [float(np.mean([(combine(c, e, f, w).argmax(1) == y).mean() for c, e, f, y in sets]))
                 for w in WEIGHT_GRID]
    return WEIGHT_GRID[int(np.argmax(by_weight))], by_weight


def probs_of_readings(model: BlendshapeExpert, blendshapes: np.ndarray, landmarks: np.ndarray,
                      found: np.ndarray) -> np.ndarray:
    """float32 (N, 7): the expert's probabilities where the landmarker read the face (``found``),
    uniform elsewhere (rows that ``combine`` leaves to the CNN)."""
    probs = np.full((len(found), model.config.num_classes), 1.0 / model.config.num_classes, np.float32)
    if np.any(found):
        probs[found] = predict_probs(model, features(blendshapes[found], landmarks[found]))
    return probs
