"""``python -m emotion_pipeline models list|fetch``: what is available, and filling the cache ahead of time
(e.g. while building a container image, so runs can then be offline)."""
from __future__ import annotations

import logging
import sys

from emotion_pipeline.models import hub, registry

log = logging.getLogger(__name__)

PROFILE_MODELS = {
    "default": ("yunet",),
    "full": ("yunet", "wav2vec2-emotion", "distilroberta-emotion", "vit-face-expression"),
}
# faster-whisper models fetched into the cache (the packaged tiny.en and base need nothing):
# analyze's "auto" uses "small" on a GPU when it is cached. "openai:<size>" fetches an openai-whisper .pt.
PROFILE_WHISPER = {"default": ("small",), "full": ("small",)}


def _list() -> int:
    sums = registry.recorded_checksums()
    for name, file in sorted(registry.SHIPPED.items()):
        path = registry.WEIGHTS_DIR / file
        state = "present" if path.exists() else "MISSING"
        sys.stdout.write(f"shipped  {name:24s} {state:8s} sha256={sums.get(file, '-')[:16]}\n")
    for name, spec in sorted(hub.PACKAGED_ASR.items()):
        sys.stdout.write(f"packaged {name:24s} {'asr':9s} {spec.requirement}\n")
    for name, entry in sorted(hub.HUB_MODELS.items()):
        sys.stdout.write(f"hub      {name:24s} {entry.kind:9s} {entry.source}\n")
    sys.stdout.write(f"cache: {hub.cache_dir()}\n")
    return 0


def main(args) -> int:
    if args.action == "list":
        return _list()
    if hub.is_offline():
        log.error("offline mode is on (EMOTION_OFFLINE / HF_HUB_OFFLINE): nothing can be fetched")
        return 2
    failures = 0
    whisper_names = tuple(dict.fromkeys(PROFILE_WHISPER[args.profile] + tuple(
        n.strip() for n in args.whisper.split(",") if n.strip())))
    for name in whisper_names:
        try:
            if name.startswith("openai:"):
                path, _ = hub.whisper_checkpoint(name.removeprefix("openai:"))
            else:
                path = hub.asr_model(name).folder
            log.info("whisper %s: %s", name, path)
        except (registry.ModelUnavailableError, registry.ChecksumError) as e:
            failures += 1
            log.error("%s", e)
    for name in PROFILE_MODELS[args.profile]:
        entry = hub.HUB_MODELS[name]
        try:
            if entry.kind == "detector":
                path = hub.fetch_url(entry.source, hub.cache_dir() / "detectors" / entry.source.rsplit("/", 1)[-1],
                                     sha256=entry.sha256)
            else:
                path, _ = hub.resolve_hf(name)
            log.info("%s: %s", name, path)
        except (registry.ModelUnavailableError, registry.ChecksumError) as e:
            failures += 1
            log.error("%s", e)
    return 1 if failures else 0
