"""Late-fusion head: per-modality class scores (+ presence mask) -> fused class logits.

Input for each example is, per modality (face, audio, text), the log-probabilities over the seven
labels and a presence bit. A missing modality contributes zeros and presence 0: it is masked,
never filled with a guess. Optionally the encoders' embeddings are projected and added too
(then the head is tied to those encoders' exact weights; the fusion metadata records them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.labels import NUM_LABELS

MODALITIES = ("face", "audio", "text")
LOG_EPS = 1e-4  # floor before the log, so a 0 probability does not give -inf


@dataclass(frozen=True)
class FusionHeadConfig:
    num_labels: int = NUM_LABELS
    n_modalities: int = len(MODALITIES)
    hidden: int = 64            # small: the input is 24 numbers; more overfits paired-unimodal data
    layers: int = 2
    dropout: float = 0.2
    embed_dims: tuple[int, ...] = ()   # per-modality embedding sizes when embeddings are used; () = scores only
    embed_proj: int = 16


class FusionHead(nn.Module):
    def __init__(self, config: FusionHeadConfig = FusionHeadConfig()):
        super().__init__()
        if isinstance(config.embed_dims, list):
            config = FusionHeadConfig(**{**config.__dict__, "embed_dims": tuple(config.embed_dims)})
        self.config = config
        m, k = config.n_modalities, config.num_labels
        in_dim = m * (k + 1)
        if config.embed_dims:
            self.proj = nn.ModuleList(nn.Linear(d, config.embed_proj) for d in config.embed_dims)
            in_dim += m * config.embed_proj
        layers: list[nn.Module] = []
        for _ in range(config.layers - 1):
            layers += [nn.Linear(in_dim, config.hidden), nn.GELU(), nn.Dropout(config.dropout)]
            in_dim = config.hidden
        layers.append(nn.Linear(in_dim, k))
        self.mlp = nn.Sequential(*layers)

    def forward(self, probs: torch.Tensor, mask: torch.Tensor, embeddings: list[torch.Tensor] | None = None) -> torch.Tensor:
        """probs (N, M, K) (rows of missing modalities are ignored), mask (N, M) in {0,1} -> logits (N, K)."""
        mask = mask.float()
        logp = torch.log(probs.clamp_min(LOG_EPS)) * mask.unsqueeze(-1)
        parts = [logp.flatten(1), mask]
        if self.config.embed_dims:
            if embeddings is None:
                raise ValueError("this fusion head was trained with embeddings; pass them")
            parts += [proj(e) * mask[:, i:i + 1] for i, (proj, e) in enumerate(zip(self.proj, embeddings))]
        return self.mlp(torch.cat(parts, dim=1))
