"""A BERT encoder in plain PyTorch, for all-MiniLM-L6-v2 (6 layers, 384 wide, 12 heads).

Why not ``transformers.BertModel``: importing transformers costs 2-4 s of start-up on a 2-core
CPU, more than the whole analysis of a short clip. The module tree and parameter names are
those of ``transformers``' BertModel (``embeddings.word_embeddings.weight``,
``encoder.layer.0.attention.self.query.weight``, ...), so the same safetensors load into either;
``tests/test_text_model.py`` checks that both give the same outputs. The tokenizer is the
package's ``tokenizer.json`` read by the ``tokenizers`` library (what BertTokenizerFast wraps).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT ``config.json`` that the architecture needs."""
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"            # exact (erf) GELU, as in BERT
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @classmethod
    def from_json_file(cls, path: str | Path) -> "BertConfig":
        data = json.loads(Path(path).read_text())
        if data.get("hidden_act", "gelu") != "gelu" or data.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute positions and GELU are implemented")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout_p = cfg.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n, length, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:     # (N, L, H*D) -> (N, H, L, D)
            return t.view(n, length, self.heads, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                             attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0,
                                             scale=1.0 / math.sqrt(self.head_dim))
        return out.transpose(1, 2).reshape(n, length, self.heads * self.head_dim)


class _DenseNorm(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): BERT's ``*Output`` blocks."""

    def __init__(self, cfg: BertConfig, d_in: int):
        super().__init__()
        self.dense = nn.Linear(d_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _DenseNorm(cfg, cfg.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _DenseNorm(cfg, cfg.intermediate_size)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``attention_mask``: additive, broadcastable to (N, heads, L, L) (0 keep, very negative drop)."""
        attended = self.attention(hidden, attention_mask)
        return self.output(self.intermediate(attended), attended)


class _Encoder(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))


class BertModel(nn.Module):
    """Embeddings + encoder layers (no pooler): the parts a sentence encoder uses."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = _Encoder(cfg)


class WordPieceTokenizer:
    """The model folder's ``tokenizer.json`` through the ``tokenizers`` library: lower-casing,
    WordPiece, ``[CLS] ... [SEP]``, right padding with ``[PAD]``, truncation to ``max_length``."""

    def __init__(self, path: str | Path, max_length: int):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(path))
        pad_id = self.tok.token_to_id("[PAD]")
        self.tok.enable_truncation(max_length=max_length)
        self.tok.enable_padding(pad_id=pad_id, pad_token="[PAD]")

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encs = self.tok.encode_batch([str(t) for t in texts])
        return {"input_ids": torch.tensor([e.ids for e in encs], dtype=torch.long),
                "attention_mask": torch.tensor([e.attention_mask for e in encs], dtype=torch.long)}
