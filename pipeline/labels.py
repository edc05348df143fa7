"""The project's label set and every dataset's mapping onto it, in one place.

Canonical labels: the Ekman six plus neutral. Any source label that has no Ekman class
(MEAD "contempt", dair-ai "love") maps to ``None`` and is dropped by the loaders.
"""
from __future__ import annotations

LABELS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
NUM_LABELS = len(LABELS)
LABEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

# Synonyms seen in datasets and in hub checkpoints' id2label tables, lower-cased.
# A name that is not here and not canonical is unknown (see ``canonical``).
_SYNONYMS: dict[str, str | None] = {
    # neutral
    "neutral": "neutral", "neu": "neutral", "calm": "neutral", "none": "neutral",
    # happy
    "happy": "happy", "happiness": "happy", "joy": "happy", "hap": "happy", "joyful": "happy",
    # sad
    "sad": "sad", "sadness": "sad",
    # angry
    "angry": "angry", "anger": "angry", "ang": "angry",
    # fearful
    "fearful": "fearful", "fear": "fearful", "fea": "fearful", "scared": "fearful",
    # disgusted
    "disgusted": "disgusted", "disgust": "disgusted", "dis": "disgusted",
    # surprised
    "surprised": "surprised", "surprise": "surprised", "sur": "surprised", "ps": "surprised",
    "pleasant_surprise": "surprised", "pleasant_surprised": "surprised",
    # no Ekman class
    "contempt": None, "love": None, "other": None, "unknown": None, "<unk>": None,
}


class UnknownLabelError(ValueError):
    """A source label that this project has no mapping for."""


def canonical(name: str) -> str | None:
    """Map a label name from any source onto LABELS; None where it has no Ekman class."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in _SYNONYMS:
        return _SYNONYMS[key]
    raise UnknownLabelError(f"unknown emotion label {name!r}; expected one of {', '.join(LABELS)}")


# FER2013 npz class order (see ../shared/data/README.md): 0 angry, 1 disgust, 2 fear,
# 3 happy, 4 sad, 5 surprise, 6 neutral.
FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_TO_OURS: tuple[int, ...] = tuple(LABEL_INDEX[canonical(c)] for c in FER2013_CLASSES)

# FER+ (Barsoum et al. 2016) vote columns, in the order of the shared ferplus_votes_*.npz files
# (``vote_columns``): ten crowd annotators per face. The seven Ekman columns map onto LABELS;
# contempt has no Ekman class, unknown and NF ("not a face") are not emotions: their votes are
# dropped (``FERPLUS_TO_OURS`` is None there).
FERPLUS_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                   "contempt", "unknown", "NF")
FERPLUS_TO_OURS: tuple[int | None, ...] = tuple(
    LABEL_INDEX[canonical(c)] if c not in ("contempt", "unknown", "NF") else None for c in FERPLUS_COLUMNS)

# RAVDESS file name field EE (03-01-EE-II-SS-RR-AA). 8 emotions; "calm" -> neutral.
RAVDESS_EMOTIONS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}
RAVDESS_8 = tuple(RAVDESS_EMOTIONS.values())  # the eight-class label set, in code order
RAVDESS_8_TO_OURS: tuple[int, ...] = tuple(LABEL_INDEX[canonical(e)] for e in RAVDESS_8)


def ravdess_fields(stem: str) -> dict[str, str] | None:
    """Parse a RAVDESS file stem; None if the name does not follow the convention."""
    parts = stem.split("-")
    if len(parts) != 7 or not all(p.isdigit() and len(p) == 2 for p in parts):
        return None
    modality, channel, emotion, intensity, statement, repetition, actor = parts
    if emotion not in RAVDESS_EMOTIONS:
        return None
    return {"modality": modality, "channel": channel, "emotion8": RAVDESS_EMOTIONS[emotion],
            "label": canonical(RAVDESS_EMOTIONS[emotion]), "intensity": intensity,
            "statement": statement, "repetition": repetition, "actor": actor}


def tess_label(folder_name: str) -> str | None:
    """TESS folders are <speaker>_<emotion>, e.g. OAF_Pleasant_surprise."""
    _, _, emotion = folder_name.partition("_")
    return canonical(emotion)


# MELD Emotion column, GoEmotions Ekman labels.txt and dair-ai label names all go through
# ``canonical``: joy->happy, anger->angry, sadness->sad, fear->fearful, disgust->disgusted,
# surprise->surprised; dair-ai "love" -> None (dropped).
MEAD_NAME_FIELD = 2  # M030_front_<emotion>_level3_001.mp4


def mead_label(file_name: str) -> str | None:
    return canonical(file_name.split("_")[MEAD_NAME_FIELD])
