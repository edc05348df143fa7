"""``python -m emotion_pipeline models list|fetch``: the model table, and filling the cache ahead of
time (e.g. while building a container image, so runs can then be offline)."""
from __future__ import annotations

import logging
import sys

from emotion_pipeline.models import registry, sources

log = logging.getLogger(__name__)


def _list() -> int:
    sums = registry.recorded_checksums()
    rows = [("name", "kind", "source", "revision / sha256", "licence", "offline")]
    for name in sorted(registry.SPECS, key=lambda n: (registry.KINDS.index(registry.SPECS[n].kind), n)):
        spec = registry.SPECS[name]
        sha = spec.sha256 or (sums.get(spec.location) if spec.origin == "shipped" else None)
        revision = spec.revision if spec.origin == "hf" else None      # pypi: the pins are the source
        pin = " ".join(filter(None, (revision, sha and f"sha256:{sha[:12]}"))) or "pinned on first download"
        rows.append((name, spec.kind, spec.source if len(spec.source) <= 60 else spec.source[:57] + "...",
                     pin, spec.licence if len(spec.licence) <= 40 else spec.licence[:37] + "...",
                     "yes" if registry.available_offline(spec) else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] + "\n")
    sys.stdout.write(f"cache: {sources.cache_dir()}\n")
    return 0


def profile_names(profile: str) -> list[str]:
    """Rows `models fetch --profile` fills the cache with (full includes default)."""
    wanted = ("default",) if profile == "default" else ("default", "full")
    return [n for n, s in registry.SPECS.items() if s.profile in wanted]


def main(args) -> int:
    if args.action == "list":
        return _list()
    if sources.is_offline():
        log.error("offline mode is on (EMOTION_OFFLINE / HF_HUB_OFFLINE): nothing can be fetched")
        return 2
    extra = [n.strip() for n in args.whisper.split(",") if n.strip()]
    failures = 0
    for name in dict.fromkeys(profile_names(args.profile) + extra):
        kind = None if name in registry.SPECS else "asr"   # --whisper also takes org/repo ids
        try:
            files = registry.locate(name, kind=kind, progress=True)
            log.info("%s: %s", name, files.path)
        except (registry.ModelUnavailableError, registry.ChecksumError) as e:
            failures += 1
            log.error("%s", e)
    return 1 if failures else 0
