"""Transcripts: Whisper (segment and word timestamps) or a subtitle / transcript file, one module per job:

- ``subtitles``: .srt, .vtt or the project's JSON read into a Transcript (``parse_subtitles``);
- ``backends``: the recognisers behind the ``ASR`` protocol (faster-whisper, openai-whisper checkpoints);
- ``choice``: which recogniser a ``whisper_model`` setting gets, and building it (``load_asr``,
  ``load_for_analysis``);
- ``session``: the streaming ``TranscriptionSession`` that is fed audio as it is demuxed.

This package's namespace re-exports what callers use, so ``from emotion_pipeline import transcribe``
and ``transcribe.TranscriptionSession`` keep working.
"""
from emotion_pipeline.transcribe.backends import (ASR, ENGLISH, LID_SPEECH_S, ASRInfo, DeferredASR,  # noqa: F401
                                                  FasterWhisperASR, LanguageGuess, OpenAIWhisperASR, WhisperInfo,
                                                  load_whisper, transcribe)
from emotion_pipeline.transcribe.choice import (CPU_BEAM, DEFAULT_ASR, GPU_ASR, GPU_BEAM,  # noqa: F401
                                                LANGUAGE_ID_MODEL, load_asr, load_for_analysis)
from emotion_pipeline.transcribe.session import (BLOCK_S, MAX_BUFFER_S, TranscriptionSession,  # noqa: F401
                                                 _quietest_cut, transcribe_audio)
from emotion_pipeline.transcribe.subtitles import parse_subtitles, spread_words  # noqa: F401
from emotion_pipeline.models import SAMPLE_RATE_HZ  # noqa: F401,E402 (callers read it from here)
