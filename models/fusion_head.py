"""Late-fusion head: per-modality class scores (+ presence mask) -> fused class logits.

Input for each example is, per modality (face, audio, text), the probabilities over the seven
labels and a presence bit. A missing modality is masked, never filled with a guess.

Three kinds:
- ``gated`` (shipped): a weighted product of experts. Each present modality's log-probabilities
  get one non-negative weight, ``softplus(bias_m + gate_class_m . p_m + gate_conf_m * max(p_m))``,
  a function of what that modality says and how sure it is; the fused logits are the weighted
  sum. The weight is a scalar per modality and example, never per class, so a lone modality's
  ranking passes through unchanged (the head only weighs modalities against each other) and a
  modality whose output says little (text of an emotionally neutral sentence) can be given
  little weight: 3 x (1 + 7 + 1) = 27 numbers.
- ``pooled``: starts as exactly the confidence-weighted average of pipeline.fuse
  (in log space, weight ``alpha``) and learns, per modality and class, how much to trust each
  encoder's log-probabilities on top of it, plus a class bias: 3 + 21 + 7 + 1 numbers. Few
  parameters, so it generalises from the small paired-unimodal pools (the MLP overfits them).
- ``mlp``: log-probabilities and presence bits (optionally projected embeddings) through an MLP.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from emotion_pipeline.labels import NUM_LABELS

MODALITIES = ("face", "audio", "text")
LOG_EPS = 1e-4  # floor before the log, so a 0 probability does not give -inf
GATE_START = 0.5413  # softplus(GATE_START) = 1


@dataclass(frozen=True)
class FusionHeadConfig:
    num_labels: int = NUM_LABELS
    n_modalities: int = len(MODALITIES)
    kind: str = "gated"         # gated | pooled | mlp (see the module docstring)
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
        if config.kind == "pooled":
            self.alpha = nn.Parameter(torch.ones(1))            # weight of the confidence-weighted average
            self.trust = nn.Parameter(torch.zeros(m))           # per-modality log-probability weight
            self.trust_class = nn.Parameter(torch.zeros(m, k))  # per-modality, per-class correction
            self.bias = nn.Parameter(torch.zeros(k))
            return
        if config.kind == "gated":
            # softplus(0.5413) = 1: starts as the plain product of experts (sum of log-probabilities)
            self.gate_bias = nn.Parameter(torch.full((m,), GATE_START))
            self.gate_class = nn.Parameter(torch.zeros(m, k))
            self.gate_conf = nn.Parameter(torch.zeros(m))
            return
        if config.kind != "mlp":
            raise ValueError(f"fusion head kind must be gated, pooled or mlp, not {config.kind!r}")
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
        if self.config.kind == "pooled":
            conf = probs.amax(-1, keepdim=True) * mask.unsqueeze(-1)       # as pipeline.fuse.average
            avg = (conf * probs).sum(1) / conf.sum(1).clamp_min(1e-6)
            weights = self.trust.view(1, -1, 1) + self.trust_class.unsqueeze(0)
            return self.alpha * torch.log(avg.clamp_min(LOG_EPS)) + (weights * logp).sum(1) + self.bias
        if self.config.kind == "gated":
            return (self.modality_weights(probs, mask).unsqueeze(-1) * logp).sum(1)
        parts = [logp.flatten(1), mask]
        if self.config.embed_dims:
            if embeddings is None:
                raise ValueError("this fusion head was trained with embeddings; pass them")
            parts += [proj(e) * mask[:, i:i + 1] for i, (proj, e) in enumerate(zip(self.proj, embeddings))]
        return self.mlp(torch.cat(parts, dim=1))

    def modality_weights(self, probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """gated heads: each present modality's non-negative weight (N, M); 0 where missing."""
        gate = self.gate_bias + (self.gate_class * probs).sum(-1) + self.gate_conf * probs.amax(-1)
        return nn.functional.softplus(gate) * mask.float()
