"""Hallucination filters: the pure rules, filter.hallucination, filter.text_lang, filter.pass_agreement.

Real hallucination strings must be rejected with the right reason; every clean reference
sentence of the demo corpus (its own language, its real duration) must pass every rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
import yaml

from granary_pipe import config, registry
from granary_pipe import text as text_norm
from granary_pipe.schema import make_table
from granary_pipe.stages.filters import phrases, rules
from granary_pipe.stages.filters.hallucination import RULE_ORDER, HallucinationFilter
from granary_pipe.stages.filters.pass_agreement import PassAgreementFilter
from granary_pipe.stages.filters.text_lang import TextLanguageFilter


def word_lengths(text: str | None) -> list[int]:
    """What the long-word rule measures: the lengths :func:`rules.word_tokens` gives (web
    addresses and e-mails none, a numeral its digits, hyphenated and dotted words their parts)."""
    return [t.length for t in rules.word_tokens(text) if t.length is not None]

DEMO = Path(__file__).resolve().parents[1] / "manifests" / "demo"
GRANARY_LANGS = ("bg cs da de el en es et fi fr hr hu it lt lv mt nl pl pt ro sk sl sv ru uk").split()
CLEAN_SCORES = {"avg_logprob": -0.3, "compression_ratio": 1.2, "no_speech_prob": 0.02}
ON_NOISE = {"no_speech_prob": 0.45}
"""Whisper's no-speech probability on the silence, music or noise phrases are hallucinated from."""


def seg(rid: str, text: str | None, lang: str | None = "en", duration_s: float | None = None, **extra) -> dict:
    """A transcribed segment; duration defaults to a realistic 2.5 words per second."""
    if duration_s is None:
        duration_s = max(0.5, len((text or "").split()) / 2.5)
    row = {"id": rid, "recording_id": rid, "text": text, "lang": lang, "duration_s": duration_s,
           "license": "CC-BY-4.0", **CLEAN_SCORES}
    row.update(extra)
    return row


def run(stage, rows: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in stage(make_table(rows, with_samples=True)).to_pylist()}


def one(stage, **kw) -> dict:
    return run(stage, [seg("a", **kw)])["a"]


def _duration(path: Path) -> float | None:
    try:
        with av.open(str(path)) as c:
            return c.duration / 1e6 if c.duration else None
    except (OSError, av.error.FFmpegError):
        return None


def demo_references() -> list[dict]:
    """Every reference sentence of the demo listing as a segment row with its real duration."""
    rows = []
    for n, line in enumerate((DEMO / "listing.jsonl").read_text(encoding="utf-8").splitlines()):
        item = json.loads(line)
        if item.get("text"):
            rows.append(seg(f"demo{n:02d}", item["text"], item["lang"], _duration(DEMO / item["path"])))
    return rows


DEMO_ROWS = demo_references()

# ============================================================================= pure rules


def test_normalize():
    assert text_norm.normalize("  Sous-titres réalisés par la communauté d’Amara.org ! ", "fr") == \
        text_norm.normalize("SOUS-TITRES réalisés par la communauté d'Amara.org", "fr") == \
        "sous titres réalisés par la communauté d amara org"
    assert text_norm.normalize("Ｔｈａｎｋ\u00a0you…\n[Music]") == "thank you music"  # NFKC: fullwidth, nbsp
    assert text_norm.normalize("Mulţumesc", "ro") == text_norm.normalize("Mulțumesc", "ro")  # cedilla vs comma below
    assert text_norm.normalize(None) == "" and text_norm.normalize("?!…") == ""


def test_longest_run_and_loops():
    ws = "a b a b a b c".split()
    assert rules.longest_run(ws, 2) == 3 and rules.longest_run(ws, 1) == 1
    assert rules.longest_run("x a b a b".split(), 2) == 2  # odd phase
    assert rules.ngram_loop("the the the the".split(), [(1, 2, 4)])
    assert not rules.ngram_loop("the the the".split(), [(1, 2, 4)])
    assert rules.ngram_loop("i want to go i want to go".split(), [(3, 5, 2)])
    assert not rules.ngram_loop("i want to go home and i want to go".split(), [(3, 5, 2)])


def test_long_word_measures_words_not_urls():
    assert word_lengths("«Hallo», sagte er: https://example.org/a/very/long/path/here.") == [5, 5, 2]
    assert rules.is_url("www.amara.org") and rules.is_url("someone@example.com") and not rules.is_url("e.g")
    assert rules.long_word([40, 3], 25, None, 18)
    assert rules.long_word([20, 5], None, 3.0, 18) and not rules.long_word([12, 2], None, 3.0, 18)
    assert not rules.long_word([20], None, 3.0, 18)  # one word: no second-longest to compare


def test_error_rate():
    assert text_norm.error_rate("The cat sat.", "the cat sat") == 0.0
    assert text_norm.error_rate("the cat sat", "the cat sat on") == pytest.approx(1 / 3)
    assert text_norm.error_rate("", "") == 0.0 and text_norm.error_rate("", "words") == 1.0
    assert text_norm.error_rate("猫が座った", "猫が寝た", by_char=True) == pytest.approx(2 / 5)
    assert text_norm.error_rate("猫が座った", "猫が寝た", "ja") == pytest.approx(2 / 5)  # by character in ja


# ============================================================================= hallucinations

STORE = "I'm going to go to the store. I'm going to go to the store. I'm going to go to the store."

HALLUCINATIONS = [
    # loops and repetition
    ("the the the the the", "en", "hallucination:ngram_loop"),
    (STORE, "en", "hallucination:repeated_ngrams"),
    ("so so so so so so so so", "en", "hallucination:ngram_loop"),
    ("Ich weiß nicht, ich weiß nicht, ich weiß nicht, was ich sagen soll.", "de", "hallucination:ngram_loop"),
    ("y luego y luego y luego y luego fuimos", "es", "hallucination:ngram_loop"),
    # subtitle credits
    ("Subtitles by the Amara.org community", "en", "hallucination:phrase"),
    ("Untertitel im Auftrag des ZDF, 2017", "de", "hallucination:phrase"),
    ("Untertitel im Auftrag des ZDF für funk, 2017", "de", "hallucination:phrase"),
    ("Untertitelung des ZDF, 2020", "de", "hallucination:phrase"),
    ("Subtítulos realizados por la comunidad de Amara.org", "es", "hallucination:phrase"),
    ("Sous-titres réalisés par la communauté d'Amara.org", "fr", "hallucination:phrase"),
    ("Sous-titres réalisés para la communauté d’Amara.org", "fr", "hallucination:phrase"),
    ("Sous-titrage ST' 501", "fr", "hallucination:phrase"),
    ("Sottotitoli creati dalla comunità Amara.org", "it", "hallucination:phrase"),
    ("Sottotitoli e revisione a cura di QTSS", "it", "hallucination:phrase"),
    ("Субтитры сделал DimaTorzok", "ru", "hallucination:phrase"),
    ("Titulky vytvořil JohnyX", "cs", "hallucination:phrase"),
    ("Napisy stworzone przez społeczność Amara.org", "pl", "hallucination:phrase"),
    # outros, in several languages
    ("Thank you for watching!", "en", "hallucination:phrase"),
    ("Thank you for watching and don't forget to subscribe to the channel.", "en", "hallucination:phrase"),
    ("Please subscribe.", "en", "hallucination:phrase"),
    ("Vielen Dank fürs Zuschauen!", "de", "hallucination:phrase"),
    ("¡Gracias por ver el video!", "es", "hallucination:phrase"),
    ("Merci d'avoir regardé !", "fr", "hallucination:phrase"),
    ("Grazie per la visione!", "it", "hallucination:phrase"),
    ("Obrigado por assistir!", "pt", "hallucination:phrase"),
    ("Bedankt voor het kijken!", "nl", "hallucination:phrase"),
    ("Спасибо за просмотр!", "ru", "hallucination:phrase"),
    ("Дякую за перегляд!", "uk", "hallucination:phrase"),
    ("Mulţumesc pentru vizionare!", "ro", "hallucination:phrase"),  # s/t-cedilla spelling
    ("Ευχαριστώ για την παρακολούθηση!", "el", "hallucination:phrase"),
    ("you", "en", "hallucination:phrase"),
    ("[Music]", "en", "hallucination:phrase"),
    # English credits and outros under another forced language (the en list applies to all)
    ("Thank you for watching!", "de", "hallucination:phrase"),
    ("Subtitles by the Amara.org community", "it", "hallucination:phrase"),
    # garbage words
    ("The results were " + "a" * 40 + " today", "en", "hallucination:long_word"),
    ("oh " + "ha" * 11 + " yes yes", "en", "hallucination:long_word"),
    ("0" * 30, "en", "hallucination:long_word"),
    ("ja " + "ne" * 24, "de", "hallucination:long_word"),  # 48 chars: over the compounding bound
]


@pytest.mark.parametrize(("text", "lang", "reason"), HALLUCINATIONS, ids=[f"{h[1]}:{h[0][:30]}" for h in HALLUCINATIONS])
def test_real_hallucination_is_rejected(text, lang, reason):
    out = one(HallucinationFilter(), text=text, lang=lang, **ON_NOISE)
    assert out["drop_reason"] == reason
    assert out["flags"][0] == reason


def test_a_short_phrase_said_surely_on_speech_is_only_flagged():
    f = HallucinationFilter()
    for text, lang in [("Thank you.", "en"), ("Gracias.", "es"), ("Danke!", "de")]:
        out = one(f, text=text, lang=lang)  # CLEAN_SCORES: sure, and Whisper hears speech
        assert out["drop_reason"] is None and out["flags"] == ["hallucination:phrase_trusted"], (text, out)
        assert one(f, text=text, lang=lang, **ON_NOISE)["drop_reason"] == "hallucination:phrase"
        assert one(f, text=text, lang=lang, avg_logprob=-0.6)["drop_reason"] == "hallucination:phrase"
    # a long outro is never trusted, however sure the decoder
    assert one(f, text="Thank you for watching!")["drop_reason"] == "hallucination:phrase"
    assert one(HallucinationFilter(min_trusted_phrase_avg_logprob=None), text="Thank you.")["drop_reason"] == \
        "hallucination:phrase"


def test_rate_and_decoder_rules():
    f = HallucinationFilter()
    long_text = "We walked along the river for hours and talked about everything under the sun."
    assert one(f, text=long_text, duration_s=1.5)["drop_reason"] == "hallucination:char_rate_high"
    assert one(f, text="Yes.", duration_s=20.0)["drop_reason"] == "hallucination:char_rate_low"
    assert one(f, text=long_text, compression_ratio=2.6)["drop_reason"] == "decoder:compression_ratio"
    assert one(f, text=long_text, avg_logprob=-1.4)["drop_reason"] == "decoder:avg_logprob"
    out = one(f, text=long_text, avg_logprob=-1.4, compression_ratio=2.6, no_speech_prob=0.9)
    assert out["drop_reason"] == "decoder:compression_ratio"
    assert out["flags"] == ["decoder:compression_ratio", "decoder:avg_logprob"]  # silence is filter.basic's
    assert one(f, text=long_text, no_speech_prob=0.99)["drop_reason"] is None
    # Chinese: no word rules (no spaces), a lower character-rate ceiling
    zh = "今天天气很好我们去公园散步吧然后一起吃午饭"
    assert one(f, text=zh, lang="zh", duration_s=4.0)["drop_reason"] is None
    assert one(f, text=zh, lang="zh", duration_s=1.0)["drop_reason"] == "hallucination:char_rate_high"
    # missing scores and durations never fire
    assert one(f, text=long_text, duration_s=None, avg_logprob=None, compression_ratio=None,
               no_speech_prob=None)["drop_reason"] is None


# ============================================================================= numerals, hyphens, dots


def test_word_tokens_split_hyphens_and_dots_but_keep_numerals_whole():
    assert [t.text for t in rules.word_tokens("1-2-3-4-5-6-7-8-9-10")] == [str(i) for i in range(1, 11)]
    assert [t.text for t in rules.word_tokens("U.S.A. e-mail d’avoir")] == ["u", "s", "a", "e", "mail", "davoir"]
    assert [t.text for t in rules.word_tokens("192.168.0.1, 3.14159; 1,500,000 12:30")] == [
        "192.168.0.1", "3.14159", "1,500,000", "12:30"]
    # a numeral's length is its digits; a URL or e-mail is a token without a length
    assert word_lengths("192.168.0.1 3.14159 1,500,000 e-mail U.S.A.") == [8, 6, 7, 1, 4, 1, 1, 1]
    assert word_lengths("1111111111111111111111111") == [25]
    assert rules.word_tokens("see www.amara.org now")[1] == rules.Token("www.amara.org", None)
    assert [t.text for t in rules.word_tokens("a-a-a-a-a-a-a-a-a-a")] == ["a"] * 10


NUMERALS_AND_ABBREVIATIONS = [  # each fired a word rule before numerals, hyphens and dots were split sensibly
    ("Count with me: 1-2-3-4-5-6-7-8-9-10, go!", "en"),   # was one 20-character word: long_word
    ("My address is 192.168.0.1 at home.", "en"),
    ("Pi is about 3.14159, give or take.", "en"),
    ("Born in the U.S.A. and proud of it.", "en"),
    ("Send me an e-mail about it.", "en"),
    ("It cost 1,000,000,000,000 dollars in the end.", "en"),  # was 000 000 000 000: ngram_loop
    ("Die Schulden betragen 10.000.000.000.000 Euro.", "de"),
    ("one two three four five six", "en"),  # a count is no repetition
    ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12", "en"),
    ("eins, zwei, drei, vier, fünf, sechs", "de"),
]


@pytest.mark.parametrize(("text", "lang"), NUMERALS_AND_ABBREVIATIONS, ids=[t for t, _ in NUMERALS_AND_ABBREVIATIONS])
def test_numerals_hyphens_and_dots_fire_no_word_rule(text, lang):
    out = one(HallucinationFilter(), text=text, lang=lang, duration_s=4.0)
    assert out["drop_reason"] is None and out["flags"] == []


@pytest.mark.parametrize(("text", "reason"), [
    ("the the the the", "hallucination:ngram_loop"),
    ("a-a-a-a-a-a-a-a-a-a", "hallucination:ngram_loop"),  # a stutter is a loop of one-letter words
    ("ha-ha-ha-ha-ha-ha", "hallucination:ngram_loop"),
    ("1-1-1-1-1-1", "hallucination:ngram_loop"),
    ("1111111111111111111111111", "hallucination:long_word"),  # 25 digits: a decoding loop
    ("The number is 1111111111111111111111111 exactly.", "hallucination:long_word"),
    ("one two three one two three", "hallucination:ngram_loop"),  # a repeated count is still a loop
])
def test_real_loops_in_numerals_and_hyphens_still_fire(text, reason):
    assert one(HallucinationFilter(), text=text, duration_s=4.0)["drop_reason"] == reason


# ============================================================================= clean text

CLEAN_EXTRA = [
    ("I am a photographer.", "en"),
    ("We share the responsibilities.", "en"),
    ("Congratulations to all of you!", "en"),
    ("No, no, no, that is not what I said.", "en"),
    ("Thank you for coming, everyone, it is great to see you here.", "en"),
    ("The ticket cost 1,500,000 dollars in 2023, and it is 24.5 percent more.", "en"),
    # a spoken address takes longer than 2.5 words/s would say: give it its ~6 s
    ("For details visit https://www.example-university-library.org/collections/speech today.", "en", 6.0),
    ("Die Geschwindigkeitsbegrenzung gilt auch für Lastkraftwagen.", "de"),
    ("Die Donaudampfschifffahrtsgesellschaft fährt heute nicht.", "de"),
    ("Ja.", "de"),
    ("To jest najprawdopodobniej prawda.", "pl"),
    ("Merci beaucoup pour votre aide, c'était très gentil.", "fr"),
    ("Grazie mille per il regalo, è bellissimo.", "it"),
    ("Ich danke Ihnen für Ihre Aufmerksamkeit und wünsche einen schönen Abend.", "de"),
]


def test_demo_references_cover_the_listing():
    assert len(DEMO_ROWS) == 23 and {r["lang"] for r in DEMO_ROWS} == {"en", "de", "it", "es"}
    assert all(r["duration_s"] and r["duration_s"] > 3 for r in DEMO_ROWS)  # real durations read


def test_zero_false_rejects_on_clean_sentences():
    rows = DEMO_ROWS + [seg(f"x{i}", *c) for i, c in enumerate(CLEAN_EXTRA)]
    out = run(HallucinationFilter(), rows)
    bad = {k: (v["drop_reason"], v["text"][:40]) for k, v in out.items() if v["drop_reason"] or v["flags"]}
    assert bad == {}


def test_zero_false_rejects_on_demo_with_text_lang_and_pass_agreement():
    lid = run(TextLanguageFilter(), DEMO_ROWS)
    assert {k: v["flags"] for k, v in lid.items() if v["flags"]} == {}
    agree = run(PassAgreementFilter(), [dict(r, pass1_text=r["text"].upper()) for r in DEMO_ROWS])
    assert all(v["drop_reason"] is None for v in agree.values())


# ============================================================================= order, flags, params


def test_first_rule_wins_and_every_rule_is_flagged():
    text = " ".join(["Thank you for watching."] * 4)
    out = one(HallucinationFilter(), text=text, duration_s=0.5, compression_ratio=3.0, avg_logprob=-1.5)
    assert out["drop_reason"] == "hallucination:phrase"
    assert out["flags"] == ["hallucination:phrase", "hallucination:ngram_loop", "hallucination:repeated_ngrams",
                            "hallucination:char_rate_high", "decoder:compression_ratio", "decoder:avg_logprob"]
    assert out["flags"] == [r for r in RULE_ORDER if r in out["flags"]]


def test_earlier_flags_kept_and_rejected_rows_pass_through():
    rows = [seg("a", "so so so so so", flags=["pnc:changed_words"]),
            seg("b", "so so so so so", drop_reason="license:CC-BY-NC-4.0", flags=["x"]),
            seg("c", "A perfectly normal sentence about the weather.")]
    out = run(HallucinationFilter(), rows)
    assert out["a"]["flags"] == ["pnc:changed_words", "hallucination:ngram_loop"]
    assert out["b"]["drop_reason"] == "license:CC-BY-NC-4.0" and out["b"]["flags"] == ["x"]
    assert out["c"]["drop_reason"] is None and out["c"]["flags"] == []


@pytest.mark.parametrize(
    ("params", "row", "default_reason"),
    [
        ({"min_short_loop_repeats": 6}, {"text": "the the the the the"}, "hallucination:ngram_loop"),
        ({"max_unique_word_ratio": None}, {"text": STORE}, "hallucination:repeated_ngrams"),
        ({"max_unique_word_ratio": 0.25}, {"text": STORE}, "hallucination:repeated_ngrams"),
        ({"min_unique_ratio_words": 30}, {"text": STORE}, "hallucination:repeated_ngrams"),
        ({"min_long_word_chars": 50, "min_long_word_ratio": None}, {"text": "It was " + "x" * 40}, "hallucination:long_word"),
        ({"long_word_ratio_off_langs": ["en"]}, {"text": "oh " + "ha" * 11 + " yes yes"}, "hallucination:long_word"),
        ({"phrase_extra_langs": []}, {"text": "Thank you for watching!", "lang": "de"}, "hallucination:phrase"),
        ({"phrases": False}, {"text": "Vielen Dank fürs Zuschauen!", "lang": "de"}, "hallucination:phrase"),
        ({"min_prefix_phrase_words": 6}, {"text": "Thank you for watching and goodbye"}, "hallucination:phrase"),
        ({"max_chars_per_s": 80.0}, {"text": "A fairly long sentence that somebody said in about one second.", "duration_s": 1.0},
         "hallucination:char_rate_high"),
        ({"min_chars_per_s": 0.1}, {"text": "Yes.", "duration_s": 20.0}, "hallucination:char_rate_low"),
        ({"max_compression_ratio": 3.0}, {"text": "A normal sentence.", "compression_ratio": 2.6}, "decoder:compression_ratio"),
        ({"min_avg_logprob": -2.0}, {"text": "A normal sentence.", "avg_logprob": -1.4}, "decoder:avg_logprob"),
    ],
)
def test_each_threshold_is_a_param(params, row, default_reason):
    kw = {"text": None, **row}
    assert one(HallucinationFilter(), **kw)["drop_reason"] == default_reason
    assert one(HallucinationFilter(**params), **kw)["drop_reason"] is None


def test_thresholds_that_tighten():
    clean = "We went to the market and bought some apples."
    assert one(HallucinationFilter(max_chars_per_s=5.0), text=clean)["drop_reason"] == "hallucination:char_rate_high"
    assert one(HallucinationFilter(min_long_word_chars=8), text=clean)["drop_reason"] is None  # longest is 6
    assert one(HallucinationFilter(min_long_word_chars_by_lang={"de": 20}),
               text="Die Geschwindigkeitsbegrenzung gilt.", lang="de")["drop_reason"] == "hallucination:long_word"


def test_bad_params_are_errors():
    with pytest.raises(ValueError, match="min_short_loop_repeats"):
        HallucinationFilter(min_short_loop_repeats=1)
    with pytest.raises(ValueError, match="no_such_rule"):
        HallucinationFilter(no_such_rule=1)


# ============================================================================= phrase lists


def test_bundled_lists_cover_granary_languages_and_match_themselves():
    assert set(GRANARY_LANGS) <= {p.stem for p in phrases.bundled_dir().glob("*.txt")}
    for lang in GRANARY_LANGS:
        path = phrases.bundled_dir() / f"{lang}.txt"
        head = path.read_text(encoding="utf-8")
        assert "collected by the granary_pipe team from commonly reported Whisper hallucinations" in head
        lines = [ln for ln in head.splitlines() if ln.strip() and not ln.startswith("#")]
        assert len(lines) >= 6, lang
        out = run(HallucinationFilter(), [seg(f"{lang}{i}", ln, lang, 2.0, **ON_NOISE) for i, ln in enumerate(lines)])
        missed = [v["text"] for v in out.values() if v["drop_reason"] != "hallucination:phrase"]
        assert missed == [], lang


def test_parse_phrases_comments_and_counts():
    assert phrases.parse_phrases("# header\n\nThank you!  # inline\n  Bye-bye \n") == ["thank you", "bye bye"]
    # a published frequency list: a count after every phrase, by space or by tab
    counted = "thank you for watching 1532\nsubtitles by the amara.org community\t87\nyou 4410\n"
    assert phrases.parse_phrases(counted) == ["thank you for watching", "subtitles by the amara org community", "you"]
    # our own lists: a phrase may end in a number unless a tab precedes it
    assert phrases.parse_phrases("Sous-titrage ST' 501\nMerci\nAbonnez-vous\n") == [
        "sous titrage st 501", "merci", "abonnez vous"]


def test_counts_appended_list_still_matches(tmp_path):
    (tmp_path / "en.txt").write_text(
        "# a list as published, counts appended\n"
        "thank you for watching 1532\n"
        "Subtitles by the Amara.org community\t87\n"
        "you 4410\n", encoding="utf-8")
    f = HallucinationFilter(phrase_dir=str(tmp_path))
    rows = [seg("a", "Thank you for watching.", **ON_NOISE), seg("b", "Subtitles by the Amara.org community", **ON_NOISE),
            seg("c", "You.", **ON_NOISE), seg("d", "Please subscribe.", **ON_NOISE)]  # d: only in the bundled list
    out = run(f, rows)
    assert [out[k]["drop_reason"] for k in "abcd"] == ["hallucination:phrase"] * 3 + [None]


# ============================================================================= text language ID


@pytest.fixture(scope="module")
def lid() -> TextLanguageFilter:
    stage = TextLanguageFilter()
    stage.setup()
    return stage


LID_CLEAN = [
    ("Je suis allé au marché ce matin pour acheter du pain frais.", "fr"),
    ("Le train avait du retard, alors nous avons pris un café à la gare.", "fr"),
    ("The weather was lovely, so we had lunch outside in the garden.", "en"),
    ("Wir haben gestern Abend lange über die Reise gesprochen.", "de"),
    ("Mañana vamos a cenar con mis padres en el centro.", "es"),
    ("Stasera andiamo al cinema con i nostri amici di scuola.", "it"),
]


def test_text_lang_real_model_accepts_matching_languages(lid):
    out = run(lid, [seg(f"s{i}", t, lang) for i, (t, lang) in enumerate(LID_CLEAN)])
    assert all(v["drop_reason"] is None and v["flags"] == [] for v in out.values())


def test_text_lang_rejects_mismatch_and_mixed_output(lid):
    rows = [
        seg("de_as_en", "Heute Morgen habe ich den Bus verpasst und musste zur Arbeit laufen.", "en"),
        seg("mixed", "I went to the store. Und dann bin ich nach Hause gegangen und habe lange geschlafen.", "en"),
        seg("it_as_es", "Questa mattina ho comprato il pane fresco nel forno vicino a casa.", "es"),
    ]
    out = run(lid, rows)
    assert out["de_as_en"]["drop_reason"] == "text_lang:mismatch:de"
    assert out["mixed"]["drop_reason"] == "text_lang:mismatch:de"
    assert out["it_as_es"]["drop_reason"] == "text_lang:mismatch:it"
    assert out["de_as_en"]["flags"] == ["text_lang:mismatch:de"]


def test_text_lang_thresholds_short_texts_and_groups(lid):
    text = "Heute Morgen habe ich den Bus verpasst und musste zur Arbeit laufen."
    assert one(TextLanguageFilter(min_mismatch_prob=1.0), text=text, lang="en")["drop_reason"] is None
    assert one(TextLanguageFilter(min_prob=1.0), text=text, lang="de")["drop_reason"] == "text_lang:low_confidence"
    short = one(lid, text="Ja, genau.", lang="en")
    assert short["drop_reason"] is None and short["flags"] == ["text_lang:skipped_short"]
    hr = "Bok, kako si danas? Ja sam dobro, hvala na pitanju."
    assert one(lid, text=hr, lang="sr")["drop_reason"] is None  # hr/sr/bs are one group
    assert one(lid, text=text, lang=None)["flags"] == []  # no language to compare with


def test_letter_count():
    assert rules.letter_count("2024 – 19,99 €") == 0 and rules.letter_count("1, 2, 3, 4, 5") == 0
    assert rules.letter_count("Привет, 123!") == 6 and rules.letter_count("東京 2024") == 2
    assert rules.letter_count("नमस्ते") == 6  # combining vowel signs count with their letters


@pytest.mark.parametrize(("text", "flag"), [
    ("1, 2, 3, 4, 5", "text_lang:skipped_no_letters"),
    ("2024 – 19,99 €", "text_lang:skipped_no_letters"),
    ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15", "text_lang:skipped_no_letters"),  # 40 characters
    ("+49 30 1234567 / 0800 123 456 789", "text_lang:skipped_no_letters"),
    ("Am 24.12.2023 um 18:30 Uhr, 19,99 €.", "text_lang:skipped_short"),  # 7 letters
])
def test_text_lang_judges_only_text_with_enough_letters(lid, text, flag):
    """Numbers and symbols leave the audio language ID in charge: flagged, never rejected, whatever
    the number of characters."""
    for lang in ("en", "de", "it"):
        out = one(lid, text=text, lang=lang)
        assert out["drop_reason"] is None and out["flags"] == [flag]


def test_text_lang_min_letters():
    text = "Heute Morgen habe ich den Bus verpasst."  # 31 letters
    stage = TextLanguageFilter(min_letters=40)
    assert one(stage, text=text, lang="en")["flags"] == ["text_lang:skipped_short"]


def test_text_lang_sets_only_drop_reason_and_flags(lid):
    rows = [seg("a", "Heute Morgen habe ich den Bus verpasst und musste zur Arbeit laufen.", "en", lang_prob=0.7),
            seg("b", "Ok.", "en")]
    before = make_table(rows, with_samples=True)
    after = lid(before)
    keep = [c for c in before.column_names if c not in ("drop_reason", "flags")]
    assert after.select(keep).equals(before.select(keep))


# ============================================================================= pass agreement


def test_pass_agreement():
    ref = "Heute Morgen habe ich den Bus verpasst und musste zur Arbeit laufen."
    rows = [
        seg("same", ref, "de", pass1_text="heute morgen habe ich den bus verpasst und musste zur arbeit laufen"),
        seg("close", ref, "de", pass1_text="Heute Morgen hab ich den Bus verpasst, musste zur Arbeit laufen."),
        seg("other", "Untertitel im Auftrag des ZDF für funk, 2017", "de", pass1_text=ref),
        seg("empty", "Vielen Dank.", "de", pass1_text=""),
        seg("none", "Anything at all.", "de", pass1_text=None),
    ]
    out = run(PassAgreementFilter(), rows)
    assert [out[k]["drop_reason"] for k in ("same", "close", "none")] == [None, None, None]
    assert out["other"]["drop_reason"] == "pass_agreement:wer" and out["other"]["flags"] == ["pass_agreement:wer"]
    assert out["empty"]["drop_reason"] == "pass_agreement:wer"
    assert run(PassAgreementFilter(max_wer=1.5), rows)["other"]["drop_reason"] is None
    assert run(PassAgreementFilter(max_wer=0.1), rows)["close"]["drop_reason"] == "pass_agreement:wer"


# ============================================================================= registry and config


PIPELINE_SNIPPET = """
  - use: filter.hallucination
    params: {phrase_extra_langs: [en], max_chars_per_s: 40, min_avg_logprob: -1.0, max_compression_ratio: 2.4}
    resources: {cpus: 0.25}
  - use: filter.text_lang
    params: {lid_model: fasttext-lid176, min_mismatch_prob: 0.8, min_prob: 0.3, min_letters: 20}
    resources: {cpus: 0.25}
"""


def test_registered_and_configurable_from_yaml(tmp_path):
    assert registry.STAGES["filter.hallucination"] is HallucinationFilter
    assert registry.STAGES["filter.text_lang"] is TextLanguageFilter and TextLanguageFilter.actor
    assert registry.STAGES["filter.pass_agreement"] is PassAgreementFilter
    path = tmp_path / "p.yaml"
    path.write_text("name: t\nstages:\n  - use: filter.basic\n" + PIPELINE_SNIPPET, encoding="utf-8")
    assert yaml.safe_load(path.read_text())["stages"][1]["use"] == "filter.hallucination"
    _, stages = config.load_pipeline(path)
    assert [s.name for s in stages] == ["filter.basic", "filter.hallucination", "filter.text_lang"]
    assert stages[2].models() == ["fasttext-lid176"]
    path.write_text("name: t\nstages:\n  - use: filter.hallucination\n    params: {char_rate_mx: 3}\n")
    with pytest.raises(config.ConfigError, match="char_rate_mx"):
        config.load_pipeline(path)
