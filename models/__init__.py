"""Neural modules, their configs, and the one registry that loads them (``models.registry.load``)."""

SAMPLE_RATE_HZ = 16_000   # the audio every speech model here takes (ours, Wav2Vec2, Whisper); the demuxer's rate
