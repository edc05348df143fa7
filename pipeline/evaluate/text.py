"""Evaluate a text emotion model on a labelled file: ``run(data, model=..., device=...) -> dict``.

The file is a MELD CSV, a GoEmotions TSV or a dair-ai ``text;label`` file, read by
``pipeline.corpora.text`` (rows whose label has no Ekman class are dropped; GoEmotions rows whose
labels map to more than one of our classes are skipped).

Returns ``pipeline.metrics.report`` over the 7 labels plus model, sha256, data, format, n.
"""
from __future__ import annotations

import logging
from pathlib import Path

from emotion_pipeline.corpora.text import read_examples
from emotion_pipeline.labels import LABELS

log = logging.getLogger(__name__)


def run(data: Path, *, model: str = "text-minilm", device: str = "cpu", batch_size: int = 64) -> dict:
    """Metrics of ``model`` (a registry name or .safetensors path) on the labelled file ``data``."""
    from emotion_pipeline.models import registry
    from emotion_pipeline.metrics import report

    data = Path(data)
    texts, y_true, fmt = read_examples(data)
    loaded = registry.load(model, device=device, kind="text")
    probs, _ = loaded.module.predict(texts, batch_size=batch_size)
    result = report(y_true, probs.argmax(1).tolist(), list(LABELS))
    result.update(model=loaded.name, sha256=loaded.sha256, data=str(data), format=fmt, n=len(texts))
    log.info("%s on %s (%s, n=%d): weighted F1 %.4f, macro F1 %.4f, accuracy %.4f", loaded.name, data.name,
             fmt, len(texts), result["weighted_f1"], result["macro_f1"], result["accuracy"])
    return result
