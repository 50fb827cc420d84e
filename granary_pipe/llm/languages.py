"""Language codes (Whisper's, ISO 639-1 where one exists) → English names for LLM prompts."""

from __future__ import annotations

_NAMES = (
    "en English|zh Chinese|de German|es Spanish|ru Russian|ko Korean|fr French|ja Japanese|"
    "pt Portuguese|tr Turkish|pl Polish|ca Catalan|nl Dutch|ar Arabic|sv Swedish|it Italian|"
    "id Indonesian|hi Hindi|fi Finnish|vi Vietnamese|he Hebrew|uk Ukrainian|el Greek|ms Malay|"
    "cs Czech|ro Romanian|da Danish|hu Hungarian|ta Tamil|no Norwegian|th Thai|ur Urdu|"
    "hr Croatian|bg Bulgarian|lt Lithuanian|la Latin|mi Maori|ml Malayalam|cy Welsh|sk Slovak|"
    "te Telugu|fa Persian|lv Latvian|bn Bengali|sr Serbian|az Azerbaijani|sl Slovenian|"
    "kn Kannada|et Estonian|mk Macedonian|br Breton|eu Basque|is Icelandic|hy Armenian|"
    "ne Nepali|mn Mongolian|bs Bosnian|kk Kazakh|sq Albanian|sw Swahili|gl Galician|mr Marathi|"
    "pa Punjabi|si Sinhala|km Khmer|sn Shona|yo Yoruba|so Somali|af Afrikaans|oc Occitan|"
    "ka Georgian|be Belarusian|tg Tajik|sd Sindhi|gu Gujarati|am Amharic|yi Yiddish|lo Lao|"
    "uz Uzbek|fo Faroese|ht Haitian Creole|ps Pashto|tk Turkmen|nn Norwegian Nynorsk|mt Maltese|"
    "sa Sanskrit|lb Luxembourgish|my Burmese|bo Tibetan|tl Tagalog|mg Malagasy|as Assamese|"
    "tt Tatar|haw Hawaiian|ln Lingala|ha Hausa|ba Bashkir|jw Javanese|su Sundanese|yue Cantonese|"
    "ga Irish"
)

LANGUAGE_NAMES: dict[str, str] = dict(item.split(" ", 1) for item in _NAMES.split("|"))
"""Every language Whisper detects (plus Irish, which EuroLLM covers) → its English name."""


def language_name(code: str) -> str:
    """English name of a language code (``de`` → ``German``); KeyError names the code."""
    try:
        return LANGUAGE_NAMES[code]
    except KeyError:
        raise KeyError(f"unknown language code {code!r}") from None
