#!/usr/bin/env python3
"""Generate the bundled ``demo`` corpus (run once by developers; output is committed).

espeak-ng speech (en/de/it/es) from the sentences below plus one music+noise clip, encoded
with ffmpeg in mixed formats; writes ``audio/*``, ``listing.jsonl``, ``demo.yaml`` and
``README.md``. Needs espeak-ng, ffmpeg, numpy, soundfile. Usage::

    python scripts/make_demo_corpus.py --out manifests/demo
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050  # espeak-ng native sample rate
SEED = 20260101
DEFAULT_LICENSE = "CC-BY-4.0"
HOMEPAGE = "https://github.com/granary-pipe/granary_pipe"
CITATION = "granary_pipe demo corpus, synthesized with espeak-ng, 2026"

S: dict[str, list[str]] = {
    "en": [
        "The morning train was late again, so I bought a coffee and waited at the station.",
        "Please remember to feed the cat while we are away on holiday.",
        "My sister likes to read in the garden when the weather is warm.",
        "She always brings a blanket and a cup of tea.",
        "We need to leave early tomorrow because the roads will be busy in the morning.",
        "I have been learning to cook, and my soup is getting better every week.",
        "Tonight my friends are coming over for dinner.",
        "The man next door is building a wooden fence around his garden.",
    ],
    "en_long": [
        "Every Saturday my family walks to the market at the end of our street.",
        "We usually buy fresh fruit, eggs and cheese for the whole week.",
        "Children play near the fountain while their parents talk with friends.",
        "Sometimes a young man plays the guitar and sings for the people passing by.",
        "If the weather turns cold, we sit inside and drink hot chocolate.",
        "After lunch we walk back home along the river and feed the ducks.",
        "In the afternoon the market closes and the street is quiet again.",
        "This simple routine is something we look forward to all week.",
    ],
    "de": [
        "Heute Morgen habe ich den Bus verpasst und musste zur Arbeit laufen.",
        "Kannst du bitte das Fenster schließen, es wird langsam kalt hier drinnen?",
        "Meine Großmutter backt jeden Sonntag einen Kuchen für die ganze Familie.",
        "Am liebsten essen wir ihn mit frischer Sahne.",
        "Ich trinke morgens gerne eine Tasse Tee mit etwas Honig.",
        "Im Sommer gehen wir oft am Fluss spazieren und beobachten die Enten.",
        "Abends sitzen wir dann gemeinsam auf dem Balkon.",
    ],
    "de_long": [
        "Am Wochenende fahren wir gerne mit dem Fahrrad aufs Land.",
        "Wir nehmen immer belegte Brote und eine Flasche Wasser mit.",
        "Am Mittag machen wir eine lange Pause am Ufer eines Sees.",
        "Die Kinder gehen schwimmen, und wir lesen ein Buch im Schatten.",
        "Manchmal kommen auch Freunde mit, dann ist es noch lustiger.",
        "Wenn die Sonne untergeht, fahren wir langsam wieder nach Hause.",
        "Am Abend kochen wir zusammen und erzählen von unserem Tag.",
        "Danach sind wir zwar müde, aber sehr zufrieden.",
        "Für uns ist das die schönste Zeit der ganzen Woche.",
    ],
    "it": [
        "Questa mattina ho comprato il pane fresco nel forno vicino a casa.",
        "I bambini giocano nel parco mentre i genitori parlano tra loro.",
        "Mio padre prepara il caffè ogni mattina prima di andare al lavoro.",
        "Domenica andiamo al mare con gli amici, se non piove.",
        "Porteremo qualcosa da mangiare e da bere.",
        "Il gatto dorme tutto il giorno sul divano del salotto.",
        "La sera invece vuole sempre giocare.",
    ],
    "es": [
        "Esta tarde vamos a visitar a mis abuelos en el pueblo.",
        "¿Sabes dónde está la biblioteca más cercana de este barrio?",
        "Me gusta caminar por la playa cuando el sol se esconde.",
        "El sonido de las olas me ayuda a relajarme.",
        "Mi hermano cocina una paella deliciosa todos los domingos.",
        "El mercado abre temprano y siempre hay mucha gente comprando fruta.",
        "Yo prefiero ir a media mañana.",
    ],
}


@dataclass
class Clip:
    """One output file: espeak voice settings, sentence indices, format, license."""

    name: str
    lang: str
    voice: str
    speed: int
    pitch: int
    sents: list[int]
    fmt: str  # flac | opus | mp3 | wav
    key: str = ""  # sentence list key (defaults to lang)
    snr_db: float | None = None  # add white noise at this SNR
    license: str | None = None  # None -> corpus default
    pause: tuple[float, float] = (0.35, 0.5)  # pause range between sentences (s)


LONG = (0.6, 1.0)
CLIPS: list[Clip] = [
    Clip("en_01", "en", "en-us+m3", 145, 50, [0], "flac"),
    Clip("en_02", "en", "en-gb", 145, 45, [1], "opus", snr_db=30.0),
    Clip("en_03", "en", "en-us", 145, 50, [2, 3], "flac", license="CC0-1.0"),
    Clip("en_04", "en", "en-gb", 150, 55, [4], "mp3"),
    Clip("en_05", "en", "en-us+m3", 150, 60, [5, 6], "flac", snr_db=28.0),
    Clip("en_06", "en", "en-us+m3", 145, 50, list(range(8)), "flac", key="en_long", pause=LONG),
    Clip("de_01", "de", "de", 145, 50, [0], "flac"),
    Clip("de_02", "de", "de", 150, 55, [1], "mp3", snr_db=32.0),
    Clip("de_03", "de", "de+m3", 140, 45, [2, 3], "flac", license="CC-BY-SA-4.0"),
    Clip("de_04", "de", "de+m3", 155, 60, [4], "wav"),
    Clip("de_05", "de", "de", 140, 50, [5, 6], "opus"),
    Clip("de_06", "de", "de+m3", 150, 45, list(range(9)), "opus", key="de_long", pause=LONG),
    Clip("it_01", "it", "it", 145, 50, [0], "flac"),
    Clip("it_02", "it", "it", 140, 55, [1], "flac", license="CC0-1.0"),
    Clip("it_03", "it", "it+m3", 140, 45, [2], "mp3"),
    Clip("it_04", "it", "it", 150, 50, [3, 4], "flac", snr_db=27.0),
    Clip("it_05", "it", "it+m3", 140, 60, [5, 6], "opus"),
    Clip("es_01", "es", "es", 145, 50, [0], "flac"),
    Clip("es_02", "es", "es", 145, 45, [1], "opus"),
    Clip("es_03", "es", "es-419", 140, 55, [2, 3], "flac", snr_db=33.0),
    Clip("es_04", "es", "es", 150, 50, [4], "mp3", license="CC0-1.0"),
    Clip("es_05", "es", "es-419", 145, 50, [5, 6], "flac"),
    Clip("en_nc_01", "en", "en-us", 145, 50, [7], "flac", license="CC-BY-NC-4.0"),
]


def espeak(text: str, voice: str, speed: int, pitch: int, tmp: Path) -> np.ndarray:
    """Synthesize ``text`` with espeak-ng; return float32 mono at SR, silence-trimmed."""
    wav = tmp / "tts.wav"
    cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text]
    subprocess.run(cmd, check=True)
    audio, sr = sf.read(wav, dtype="float32")
    assert sr == SR, sr
    active = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[active[0] : active[-1] + 1]


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white noise at ``snr_db`` relative to the RMS of the active (non-silent) part."""
    active = x[np.abs(x) > 1e-3]
    p_sig = float(np.mean(active**2)) if active.size else 1e-6
    noise = rng.standard_normal(x.size).astype(np.float32)
    return x + noise * np.sqrt(p_sig / 10 ** (snr_db / 10))


def music(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Synthesize a chord/arpeggio loop (C, G, Am, F) with pink-ish noise; no speech."""
    chords = [[60, 64, 67], [55, 59, 62], [57, 60, 64], [53, 57, 60]]
    t_note, out = seconds / 48, []  # 8 bars of 6 notes
    for i in range(8):
        for k, midi in enumerate(chords[i % 4] * 2):
            f = 440.0 * 2 ** ((midi + 12 * (k >= 3) - 69) / 12)
            t = np.arange(int(SR * t_note)) / SR
            tone = sum(np.sin(2 * np.pi * f * h * t) / h**1.5 for h in (1, 2, 3, 4))
            pad = sum(np.sin(2 * np.pi * 440.0 * 2 ** ((m - 81) / 12) * (t + k * t_note))
                      for m in chords[i % 4])
            out.append(0.25 * tone * np.exp(-6 * t) + 0.05 * pad)
    x = np.concatenate(out).astype(np.float32)
    noise = np.cumsum(rng.standard_normal(x.size)) * 0.02
    noise = (noise - np.convolve(noise, np.ones(400) / 400, "same")).astype(np.float32)
    return 0.8 * x / np.abs(x).max() + 0.1 * noise / np.abs(noise).max()


def encode(x: np.ndarray, fmt: str, dest: Path, tmp: Path) -> None:
    """Write ``x`` (float32 at SR) to ``dest`` in ``fmt`` with bit-exact ffmpeg flags."""
    x = np.clip(x, -0.99, 0.99)
    if fmt == "wav":  # 22.05 kHz mono PCM, written directly
        sf.write(dest, x, SR, subtype="PCM_16")
        return
    src = tmp / "src.wav"
    sf.write(src, x, SR, subtype="PCM_16")
    codec = {"flac": ["flac", "-sample_fmt", "s16"], "opus": ["libopus", "-b:a", "24k"],
             "mp3": ["libmp3lame", "-b:a", "32k"]}[fmt]
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), "-ac", "1",
           "-ar", "16000", "-c:a", *codec, "-map_metadata", "-1", "-fflags", "+bitexact",
           "-flags:a", "+bitexact", str(dest)]
    subprocess.run(cmd, check=True)


def build(out: Path) -> list[dict]:
    """Generate all audio under ``out/audio``; return listing rows (plus README info)."""
    audio_dir = out / "audio"
    if audio_dir.exists():
        shutil.rmtree(audio_dir)
    audio_dir.mkdir(parents=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for idx, c in enumerate(CLIPS):
            rng = np.random.default_rng(SEED + idx)
            sents = [S[c.key or c.lang][i] for i in c.sents]
            edge = np.zeros(int(0.3 * SR), np.float32)
            parts = [edge]
            for j, text in enumerate(sents):
                if j:
                    parts.append(np.zeros(int(rng.uniform(*c.pause) * SR), np.float32))
                parts.append(espeak(text, c.voice, c.speed, c.pitch, tmp))
            x = np.concatenate([*parts, edge])
            if c.snr_db is not None:
                x = add_noise(x, c.snr_db, rng)
            path = f"audio/{c.name}.{c.fmt}"
            encode(x, c.fmt, out / path, tmp)
            row = {"path": path, "lang": c.lang, "text": " ".join(sents)}
            if c.license:
                row["license"] = c.license
            rows.append(row | {"_dur": x.size / SR, "_how": f"{c.voice} -s{c.speed} -p{c.pitch}"
                               + (f", noise {c.snr_db:g} dB SNR" if c.snr_db else "")})
        x = music(10.0, np.random.default_rng(SEED + 1000))
        encode(x, "mp3", audio_dir / "noise_music_01.mp3", tmp)
        rows.append({"path": "audio/noise_music_01.mp3", "_dur": x.size / SR,
                     "_how": "synthesized chords + noise, no speech"})
    return rows


FMT = {"flac": "FLAC 16 kHz mono", "opus": "Ogg/Opus 24 kbps 16 kHz", "mp3": "MP3 32 kbps 16 kHz",
       "wav": "WAV PCM16 22.05 kHz mono"}


def write_meta(out: Path, rows: list[dict]) -> None:
    """Write listing.jsonl, demo.yaml and README.md next to the audio."""
    with open(out / "listing.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")},
                               ensure_ascii=False) + "\n")
    total = sum(r["_dur"] for r in rows)
    (out / "demo.yaml").write_text(
        f"name: demo\nlicense: {DEFAULT_LICENSE}          # corpus default (SPDX id)\n"
        f'homepage: {HOMEPAGE}\ncitation: "{CITATION}"\ndescription: >-\n'
        f"  Synthetic demo corpus ({len(rows)} files, {total:.0f} s): espeak-ng speech in en, de,\n"
        "  it and es (short clips plus two long multi-sentence recordings), one music+noise clip\n"
        "  without speech and one non-commercial English clip, in FLAC, Ogg/Opus, MP3 and WAV.\n"
        "  Generated by scripts/make_demo_corpus.py.\nlisting: listing.jsonl\n", encoding="utf-8")
    table = "\n".join(
        f"| `{r['path']}` | {r.get('lang', '-')} | {r['_dur']:.1f} | "
        f"{FMT[r['path'].rsplit('.', 1)[1]]} | {r.get('license', DEFAULT_LICENSE)} | {r['_how']} |"
        for r in rows)
    (out / "README.md").write_text(f"""# Demo corpus

Tiny synthetic corpus for `granary_pipe` demos and tests ({len(rows)} files, {total:.1f} s):
source manifest [`demo.yaml`](demo.yaml), per-file path/lang/text/license in
[`listing.jsonl`](listing.jsonl). Speech in English, German, Italian and Spanish is
synthesized with [espeak-ng](https://github.com/espeak-ng/espeak-ng) from the sentences in
`scripts/make_demo_corpus.py`, with varied voices, speed and pitch and seeded white noise on
a few clips. `en_06`/`de_06` are long recordings with 0.6-1.0 s pauses (segmentation),
`noise_music_01` is synthesized music plus noise without speech, `en_nc_01` is declared
non-commercial (license gate), and the mixed formats exercise the decoders.

Regenerate (needs `espeak-ng`, `ffmpeg`, `numpy`, `soundfile`; seeded, but byte-identical
output also needs the same espeak-ng/ffmpeg versions):

```sh
python scripts/make_demo_corpus.py --out manifests/demo
```

| file | lang | seconds | format | license | synthesis |
|---|---|---|---|---|---|
{table}

Licensing: the corpus default is `{DEFAULT_LICENSE}`; files with another license above (and
in `listing.jsonl`) are licensed as declared. espeak-ng is GPL-3.0 software, but its license
does not extend to its output: the speech is generated from this project's own sentences
and the project licenses the clips as declared. The music clip is generated with numpy.
""", encoding="utf-8")


def main() -> None:
    """Parse arguments and build the corpus."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("manifests/demo"))
    args = ap.parse_args()
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found on PATH")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = build(args.out)
    write_meta(args.out, rows)
    print(f"wrote {len(rows)} files, {sum(r['_dur'] for r in rows):.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
