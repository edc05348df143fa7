"""Language codes and names, normalised to the codes Whisper uses (ISO 639-1 where there is one).

``normalise_language("EN") == normalise_language("en-US") == normalise_language("eng") ==
normalise_language("English") == "en"``: the one normaliser, used wherever a language is compared
(the ``language`` setting, a transcript file's ``language``, the text model's English-only check).
"""
from __future__ import annotations

# code -> (English name, other codes for it: ISO 639-2/B and /T, 639-3, old or regional codes),
# the 100 languages of Whisper's tokenizer in its order
LANGUAGES: dict[str, tuple[str, str]] = {
    "en": ("english", "eng"),
    "zh": ("chinese", "zho chi cmn"),
    "de": ("german", "deu ger"),
    "es": ("spanish", "spa"),
    "ru": ("russian", "rus"),
    "ko": ("korean", "kor"),
    "fr": ("french", "fra fre"),
    "ja": ("japanese", "jpn"),
    "pt": ("portuguese", "por"),
    "tr": ("turkish", "tur"),
    "pl": ("polish", "pol"),
    "ca": ("catalan", "cat"),
    "nl": ("dutch", "nld dut"),
    "ar": ("arabic", "ara"),
    "sv": ("swedish", "swe"),
    "it": ("italian", "ita"),
    "id": ("indonesian", "ind"),
    "hi": ("hindi", "hin"),
    "fi": ("finnish", "fin"),
    "vi": ("vietnamese", "vie"),
    "he": ("hebrew", "heb"),
    "uk": ("ukrainian", "ukr"),
    "el": ("greek", "ell gre"),
    "ms": ("malay", "msa may"),
    "cs": ("czech", "ces cze"),
    "ro": ("romanian", "ron rum"),
    "da": ("danish", "dan"),
    "hu": ("hungarian", "hun"),
    "ta": ("tamil", "tam"),
    "no": ("norwegian", "nor nob nb"),
    "th": ("thai", "tha"),
    "ur": ("urdu", "urd"),
    "hr": ("croatian", "hrv"),
    "bg": ("bulgarian", "bul"),
    "lt": ("lithuanian", "lit"),
    "la": ("latin", "lat"),
    "mi": ("maori", "mri mao"),
    "ml": ("malayalam", "mal"),
    "cy": ("welsh", "cym wel"),
    "sk": ("slovak", "slk slo"),
    "te": ("telugu", "tel"),
    "fa": ("persian", "fas per"),
    "lv": ("latvian", "lav"),
    "bn": ("bengali", "ben"),
    "sr": ("serbian", "srp"),
    "az": ("azerbaijani", "aze"),
    "sl": ("slovenian", "slv"),
    "kn": ("kannada", "kan"),
    "et": ("estonian", "est"),
    "mk": ("macedonian", "mkd mac"),
    "br": ("breton", "bre"),
    "eu": ("basque", "eus baq"),
    "is": ("icelandic", "isl ice"),
    "hy": ("armenian", "hye arm"),
    "ne": ("nepali", "nep"),
    "mn": ("mongolian", "mon"),
    "bs": ("bosnian", "bos"),
    "kk": ("kazakh", "kaz"),
    "sq": ("albanian", "sqi alb"),
    "sw": ("swahili", "swa"),
    "gl": ("galician", "glg"),
    "mr": ("marathi", "mar"),
    "pa": ("punjabi", "pan"),
    "si": ("sinhala", "sin"),
    "km": ("khmer", "khm"),
    "sn": ("shona", "sna"),
    "yo": ("yoruba", "yor"),
    "so": ("somali", "som"),
    "af": ("afrikaans", "afr"),
    "oc": ("occitan", "oci"),
    "ka": ("georgian", "kat geo"),
    "be": ("belarusian", "bel"),
    "tg": ("tajik", "tgk"),
    "sd": ("sindhi", "snd"),
    "gu": ("gujarati", "guj"),
    "am": ("amharic", "amh"),
    "yi": ("yiddish", "yid"),
    "lo": ("lao", "lao"),
    "uz": ("uzbek", "uzb"),
    "fo": ("faroese", "fao"),
    "ht": ("haitian creole", "hat"),
    "ps": ("pashto", "pus"),
    "tk": ("turkmen", "tuk"),
    "nn": ("nynorsk", "nno"),
    "mt": ("maltese", "mlt"),
    "sa": ("sanskrit", "san"),
    "lb": ("luxembourgish", "ltz"),
    "my": ("myanmar", "mya bur"),
    "bo": ("tibetan", "bod tib"),
    "tl": ("tagalog", "tgl fil"),
    "mg": ("malagasy", "mlg"),
    "as": ("assamese", "asm"),
    "tt": ("tatar", "tat"),
    "haw": ("hawaiian", ""),
    "ln": ("lingala", "lin"),
    "ha": ("hausa", "hau"),
    "ba": ("bashkir", "bak"),
    "jw": ("javanese", "jav jv"),
    "su": ("sundanese", "sun"),
    "yue": ("cantonese", ""),
}
# other names people write for some of them
OTHER_NAMES = {"mandarin": "zh", "castilian": "es", "flemish": "nl", "farsi": "fa", "burmese": "my",
               "moldavian": "ro", "moldovan": "ro", "valencian": "ca", "panjabi": "pa", "pushto": "ps",
               "sinhalese": "si", "haitian": "ht", "letzeburgesch": "lb", "filipino": "tl", "bokmal": "no",
               "norwegian bokmal": "no", "norwegian nynorsk": "nn", "iw": "he", "in": "id", "ji": "yi"}

_LOOKUP: dict[str, str] = {}
for _code, (_name, _others) in LANGUAGES.items():
    _LOOKUP[_code] = _code
    _LOOKUP[_name] = _code
    for _other in _others.split():
        _LOOKUP.setdefault(_other, _code)
_LOOKUP.update({k: v for k, v in OTHER_NAMES.items() if k not in _LOOKUP})


def normalise_language(value: object) -> str | None:
    """The Whisper code of a language written as a code (``en``, ``EN``), a BCP-47 tag (``en-US``,
    ``zh_Hans``), an ISO 639-2/3 code (``eng``, ``ger``) or an English name (``English``); None when
    it is none of these (or not a string)."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.strip().lower().replace("_", "-").split())
    if text in _LOOKUP:
        return _LOOKUP[text]
    return _LOOKUP.get(text.split("-")[0])
