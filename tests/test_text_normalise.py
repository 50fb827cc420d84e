"""The one text normalisation (granary_pipe.text): numbers in one written form per language, and
what compares texts through it: pass agreement, the phrase rule, the PnC guard, the report.

Each language's cases: cardinals, ordinals, decimals, years, currencies, ranges, apostrophes,
each a pair of texts that must normalise alike (what Whisper writes in digits against what a
greedy pass or a human reference spells out), and pairs that must not (a real difference)."""

from __future__ import annotations

import json

import pytest

from granary_pipe import digest, rundir, text
from granary_pipe.report.summary import summarize
from granary_pipe.schema import make_table
from granary_pipe.stages.filters.hallucination import HallucinationFilter
from granary_pipe.stages.filters.pass_agreement import PassAgreementFilter
from granary_pipe.stages.pnc import guard

try:
    from tests.helpers_rundir import Row, make_run
except ImportError:  # tests/ not importable as a package: pytest put tests/ on sys.path
    from helpers_rundir import Row, make_run

SAME = {
    "en": {
        "cardinal": ("I have 21 apples and 1,500 pears.", "I have twenty one apples and one thousand five hundred pears."),
        "ordinal": ("It was the 1st time, the 21st century.", "It was the first time, the twenty first century."),
        "decimal": ("It weighs 3.5 kilos.", "It weighs three point five kilos."),
        "year": ("Born in 1990.", "Born in nineteen ninety."),
        "currency": ("It costs $20.", "It costs twenty dollars."),
        "range": ("From 5 to 10 people.", "From five to ten people."),
        "apostrophe": ("I don't know, it’s fine.", "I do not know, it is fine."),
    },
    "de": {
        "cardinal": ("Ich habe 21 Äpfel und 1.500 Birnen.", "Ich habe einundzwanzig Äpfel und tausendfünfhundert Birnen."),
        "ordinal": ("Am 3. Mai war der 1. Tag.", "Am dritten Mai war der erste Tag."),
        "decimal": ("Es wiegt 3,5 Kilo.", "Es wiegt drei Komma fünf Kilo."),
        "year": ("Geboren 1990.", "Geboren neunzehnhundertneunzig."),
        "currency": ("Es kostet 20 €.", "Es kostet zwanzig Euro."),
        "range": ("Von 5 bis 10 Leute.", "Von fünf bis zehn Leute."),
        "apostrophe": ("Wie geht's?", "Wie geht’s?"),
    },
    "fr": {
        "cardinal": ("J'ai 21 pommes et 1 500 poires.", "J'ai vingt et un pommes et mille cinq cents poires."),
        "ordinal": ("Le 1er mai, la 2e fois, le 21ème siècle.", "Le premier mai, la deuxième fois, le vingt et unième siècle."),
        "decimal": ("Il pèse 3,5 kilos.", "Il pèse trois virgule cinq kilos."),
        "year": ("Né en 1990.", "Né en mille neuf cent quatre-vingt-dix."),
        "currency": ("Ça coûte 20 €.", "Ça coûte vingt euros."),
        "range": ("De 5 à 10 personnes.", "De cinq à dix personnes."),
        "apostrophe": ("Aujourd'hui l'homme.", "Aujourd’hui l’homme."),
    },
    "es": {
        "cardinal": ("Tengo 21 manzanas y 1.500 peras.", "Tengo veintiuno manzanas y mil quinientas peras."),
        "ordinal": ("El 1.º de mayo, la 1.ª vez.", "El primero de mayo, la primera vez."),
        "decimal": ("Pesa 3,5 kilos.", "Pesa tres coma cinco kilos."),
        "year": ("Nació en 1990.", "Nació en mil novecientos noventa."),
        "currency": ("Cuesta 20 €.", "Cuesta veinte euros."),
        "range": ("De 5 a 10 personas.", "De cinco a diez personas."),
        "apostrophe": ("Rock 'n' roll.", "Rock ’n’ roll."),
    },
    "pt": {
        "cardinal": ("Tenho 21 maçãs e 1.500 peras.", "Tenho vinte e um maçãs e mil e quinhentas peras."),
        "ordinal": ("O 1º dia, a 1ª vez.", "O primeiro dia, a primeira vez."),
        "decimal": ("Pesa 3,5 quilos.", "Pesa três vírgula cinco quilos."),
        "year": ("Nasceu em 1990.", "Nasceu em mil novecentos e noventa."),
        "currency": ("Custa 20 €.", "Custa vinte euros."),
        "range": ("De 5 a 10 pessoas.", "De cinco a dez pessoas."),
        "apostrophe": ("Copo d'água.", "Copo d’água."),
    },
    "it": {
        "cardinal": ("Ho 21 mele e 1.500 pere.", "Ho ventuno mele e millecinquecento pere."),
        "ordinal": ("Il 1º maggio, la 1ª volta.", "Il primo maggio, la prima volta."),
        "decimal": ("Pesa 3,5 chili.", "Pesa tre virgola cinque chili."),
        "year": ("Nato nel 1990.", "Nato nel millenovecentonovanta."),
        "currency": ("Costa 20 €.", "Costa venti euro."),
        "range": ("Da 5 a 10 persone.", "Da cinque a dieci persone."),
        "apostrophe": ("L'anno dell'amico.", "L’anno dell’amico."),
    },
    "pl": {  # num2words: digits → words
        "cardinal": ("Mam 21 jabłek.", "Mam dwadzieścia jeden jabłek."),
        "decimal": ("Waży 3,5 kilo.", "Waży trzy przecinek pięć kilo."),
        "year": ("Urodzony w 1990.", "Urodzony w tysiąc dziewięćset dziewięćdziesiąt."),
        "currency": ("Kosztuje 5 €.", "Kosztuje pięć euro."),
    },
}

CASES = [(lang, kind, a, b) for lang, kinds in SAME.items() for kind, (a, b) in kinds.items()]


@pytest.mark.parametrize("lang,kind,written,spoken", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_digits_and_words_normalise_alike(lang, kind, written, spoken):
    assert text.normalize(written, lang) == text.normalize(spoken, lang)
    assert text.error_rate(written, spoken, lang) == 0.0


def test_error_rate_of_a_number_written_two_ways_is_zero():
    assert text.error_rate("I have 21 apples", "I have twenty one apples", "en") == 0
    assert text.error_rate("I have 21 apples", "I have twenty two apples", "en") == pytest.approx(1 / 4)
    assert text.error_rate("J'ai 21 ans", "J'ai vingt et un ans", "fr") == 0


def test_dash_variants_of_a_range_agree_and_diacritics_stay():
    assert text.normalize("5-10", "fr") == text.normalize("5–10", "fr") == text.normalize("5 – 10", "fr") == "5 10"
    assert text.normalize("Café PÂTÉ élève", "fr") == "café pâté élève"  # accents carry meaning
    assert text.normalize("Straße", "de") == text.normalize("STRASSE", "de")
    assert text.normalize("Mulţumesc", "ro") == text.normalize("Mulțumesc", "ro")
    assert text.normalize("नमस्ते, दुनिया!", "hi") == "नमस्ते दुनिया"  # vowel signs (marks) kept
    assert text.normalize("我有二十一个苹果。", "zh") == text.normalize("我有21个苹果", "zh")
    assert text.normalize("Colour, Mr. Smith", "en") == text.normalize("color mister smith", "en")
    assert text.normalize("pt-BR is pt", "pt-BR") == text.normalize("pt-BR is pt", "pt")


def test_real_differences_stay_different():
    assert text.normalize("21 pommes", "fr") != text.normalize("vingt-deux pommes", "fr")
    assert text.normalize("Le 1er mai", "fr") != text.normalize("Le deuxième mai", "fr")
    assert text.normalize("3,5 kilos", "de") != text.normalize("drei Komma sechs kilos", "de")
    assert text.normalize("20 €", "it") != text.normalize("venti dollari", "it")
    assert text.normalize("Tenho 21 maçãs", "pt") != text.normalize("Tenho 12 maçãs", "pt")


def test_normalisation_is_idempotent():
    for lang, kind, a, b in CASES:
        once = text.normalize(a, lang)
        assert text.normalize(once, lang) == once, (lang, kind)


# ----------------------------------------------------------------- pass agreement

NUMBERS_TWO_WAYS = {
    "pt": ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10.", "Um, dois, três, quatro, cinco, seis, sete, oito, nove, dez."),
    "fr": ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10.", "Un, deux, trois, quatre, cinq, six, sept, huit, neuf, dix."),
    "es": ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10.", "Uno, dos, tres, cuatro, cinco, seis, siete, ocho, nueve, diez."),
    "de": ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10.", "Eins, zwei, drei, vier, fünf, sechs, sieben, acht, neun, zehn."),
    "it": ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10.", "Uno, due, tre, quattro, cinque, sei, sette, otto, nove, dieci."),
    "en": ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10.", "One, two, three, four, five, six, seven, eight, nine, ten."),
    "pl": ("Mam 21 lat i 3 koty.", "Mam dwadzieścia jeden lat i trzy koty."),
}
REALLY_DIFFERENT = {
    "pt": ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10.", "Bom dia a todos, obrigado por terem vindo hoje."),
    "fr": ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10.", "Sous-titres réalisés par la communauté d'Amara.org"),
    "es": ("Tengo 21 años.", "Gracias por ver el vídeo."),
    "de": ("Ich habe 21 Äpfel.", "Untertitel im Auftrag des ZDF."),
    "it": ("Ho 21 anni.", "Grazie per la visione."),
}


def _agreement(rows: list[tuple[str, str, str]]) -> list[str | None]:
    table = make_table([{"id": f"r{i}", "recording_id": f"r{i}", "lang": lang, "text": t2, "pass1_text": t1}
                        for i, (lang, t2, t1) in enumerate(rows)])
    return [r["drop_reason"] for r in PassAgreementFilter()(table).to_pylist()]


def test_pass_agreement_keeps_numbers_written_two_ways_and_rejects_real_differences():
    same = [(lang, digits, words) for lang, (digits, words) in NUMBERS_TWO_WAYS.items()]
    same += [(lang, words, digits) for lang, (digits, words) in NUMBERS_TWO_WAYS.items()]
    assert _agreement(same) == [None] * len(same)
    different = [(lang, a, b) for lang, (a, b) in REALLY_DIFFERENT.items()]
    assert _agreement(different) == ["pass_agreement:wer"] * len(different)


@pytest.mark.parametrize("lang", ["de", "en", "fr", "es", "pt", "it", "pl"])
def test_a_count_written_without_spaces_is_a_list_of_numbers(lang):
    # label_quality dev split, de_numbers_01: pass 1 wrote "2,3,4,5,5,8,9,10", pass 2 "2, 3, ... 10"; read as
    # one number (German decimal comma, English thousands) the passes disagreed completely and a good label was lost
    pass1, pass2 = "2,3,4,5,5,8,9,10", "2, 3, 4, 5, 6, 7, 8, 9, 10"
    assert text.error_rate(pass2, pass1, lang) == pytest.approx(2 / 9)
    assert _agreement([(lang, pass2, pass1)]) == [None]
    assert text.normalize("1,000,000", "en") == text.normalize("1000000", "en")  # thousands groups stay one number


def test_pass_agreement_compares_one_or_two_word_texts_by_character():
    # label_quality held-out split, en_numbers_02: pass 1 "12.50", pass 2 "$12.50" (the reference): one word
    # each, so WER 1.0 rejected a good label; by character they differ by the sign
    assert _agreement([("en", "$12.50", "12.50"), ("de", "Zwölf Euro", "12 Euro"), ("it", "Buon giorno", "Buongiorno")]) \
        == [None, None, None]
    assert _agreement([("de", "Yeah.", "Ja."), ("en", "Thank you for watching.", "Thank you."),
                       ("en", "Thank you.", "Music")]) == ["pass_agreement:wer"] * 3
    assert PassAgreementFilter(cer_below_words=0).rules({"pass1_text": "12.50", "text": "$12.50", "lang": "en"}) \
        == ["pass_agreement:wer"]


# ----------------------------------------------------------------- the other comparisons


def test_phrase_rule_matches_a_credit_line_with_its_year_spelled_out():
    stage = HallucinationFilter()
    rows = [{"id": "a", "recording_id": "a", "lang": "de", "text": "Untertitelung des ZDF, 2020", "duration_s": 2.0},
            {"id": "b", "recording_id": "b", "lang": "de", "text": "Untertitelung des ZDF zweitausendzwanzig",
             "duration_s": 2.0},
            {"id": "c", "recording_id": "c", "lang": "fr", "text": "Thank you for watching!", "duration_s": 2.0}]
    out = stage(make_table(rows)).to_pylist()
    assert [r["drop_reason"] for r in out] == ["hallucination:phrase"] * 3


def test_pnc_guard_compares_normalised_words_in_the_rows_language():
    assert guard.check("i have twenty one apples", "I have 21 apples.", lang="en") is None
    assert guard.check("j'ai vingt et un ans", "J'ai 21 ans.", lang="fr") is None
    assert guard.check("i have twenty one apples", "I have 35 apples.", lang="en") == "words_changed"


def _numbers_run(tmp_path):
    rows = [Row(id="pt-a", recording_id="pt-a", lang="pt", duration_s=3.0, text="1, 2, 3, 4, 5, 6, 7, 8, 9, 10.",
                ref_text="Um, dois, três, quatro, cinco, seis, sete, oito, nove, dez."),
            Row(id="en-a", recording_id="en-a", lang="en", duration_s=2.0, text="I have 21 apples.",
                ref_text="I have twenty one apples."),
            Row(id="fr-a", recording_id="fr-a", lang="fr", duration_s=2.0, drop_reason="pass_agreement:wer",
                text="Un, deux, trois, quatre, cinq.", ref_text="1, 2, 3, 4, 5.")]
    return make_run(tmp_path, {"u000000": rows}, uncommitted={}, failed={})


def test_report_scores_numbers_written_two_ways_as_equal(tmp_path):
    run = _numbers_run(tmp_path)
    summary = summarize(run)
    wer = summary["reference_wer"]
    assert wer["pt"]["wer"] == 0.0 and wer["en"]["wer"] == 0.0
    rule = next(r for r in summary["rule_quality"]["rules"] if r["rule"] == "pass_agreement:wer")
    assert (rule["rows_scored"], rule["rows_good"]) == (1, 1)  # a false reject, counted as one
    kept = summary["rule_quality"]["kept"]
    assert (kept["rows_scored"], kept["rows_garbage"]) == (2, 0)


def test_a_marker_digested_under_the_old_normalisation_is_digested_again(tmp_path):
    run = _numbers_run(tmp_path)
    path = rundir.unit_dir(run, "u000000") / rundir.MARKER
    marker = json.loads(path.read_text())
    old = marker[digest.KEY]
    assert old["v"] == digest.VERSION > 1
    old.update(v=1, wer={"pt": [1, 0, 10, 10, 30, 40], "en": [1, 0, 2, 5, 9, 20]},
               kept_scored=[2, 2, 5.0])  # what version 1 measured: numbers written two ways as errors
    path.write_text(json.dumps(marker))
    summary = summarize(run)
    assert summary["reference_wer"]["pt"]["wer"] == 0.0
    assert summary["rule_quality"]["kept"]["rows_garbage"] == 0


def test_every_whisper_language_normalises_odd_numbers_without_error():
    from granary_pipe.stages.asr.lid_resolve import whisper_langs

    odd = ["I have 21 apples, 3,5 € 1er 1.500 10 000 2020", "１２３ ％ ½ ²", "99999999999999999999999999999999 123456789",
           "1e10 0.000001 1,2,3 --5", "", "?!…"]
    for lang in sorted(whisper_langs()):
        for s in odd:
            assert isinstance(text.normalize(s, lang), str)
    # a phone number or identifier stays digits (spelled out it says nothing; Amharic's num2words never returns)
    assert text.normalize("0123456789012345", "pl") == "0123456789012345"
    assert text.normalize("999999999", "am") == "999999999"


def test_trainer_wer_compares_normalised_text_in_each_rows_language():
    from granary_pipe.train.infer import score

    got = score(["a", "b", "c"], ["I have twenty one apples.", "J'ai vingt et un ans.", "Um."],
                ["i have 21 apples", "j ai 21 ans", "uh"], ["en", "fr", "en"])
    assert (got["utterances"], got["wer"], got["cer"]) == (2, 0.0, 0.0)
    assert score(["a"], ["I have twenty one apples."], ["i have 35 apples"], ["en"])["wer"] == pytest.approx(1 / 4)
