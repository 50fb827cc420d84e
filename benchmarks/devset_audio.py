"""Audio for the labelled dev set: espeak-ng speech, backgrounds, non-speech, encoders, broken files.

Everything works on float32 mono at :data:`SR` (espeak-ng's native 22.05 kHz) and is seeded by
the caller's ``numpy.random.Generator``, so a build is deterministic for one espeak-ng version.
Encoders write WAV/FLAC/MP3/Ogg-Opus through soundfile (libsndfile) and M4A/AAC through PyAV,
resampling with PyAV (FFmpeg's swresample) where a format needs another rate.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import av
import numpy as np
import soundfile as sf

SR = 22050
"""Working sample rate (espeak-ng's own)."""


def espeak(text: str, voice: str, speed: int = 160, pitch: int = 50) -> np.ndarray:
    """Speech for ``text`` (espeak-ng ``-v voice -s speed -p pitch``), leading/trailing silence cut."""
    with tempfile.TemporaryDirectory(prefix="devset-tts-") as tmp:
        wav = Path(tmp) / "tts.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text]
        try:
            subprocess.run(cmd, check=True, capture_output=True)
        except FileNotFoundError:
            raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)") from None
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"espeak-ng -v {voice} failed on {text!r}: {exc.stderr.decode()[:200]}") from None
        audio, sr = sf.read(wav, dtype="float32")
    if sr != SR:
        raise RuntimeError(f"espeak-ng wrote {sr} Hz, expected {SR}")
    active = np.flatnonzero(np.abs(audio) > 1e-3)
    if active.size == 0:
        raise RuntimeError(f"espeak-ng -v {voice} produced silence for {text!r}")
    return audio[active[0] : active[-1] + 1]


def silence(seconds: float) -> np.ndarray:
    """Digital silence."""
    return np.zeros(int(round(seconds * SR)), np.float32)


def concat_with_pauses(parts: list[np.ndarray], pause_s: tuple[float, float], rng: np.random.Generator,
                       edge_s: float = 0.3) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Parts joined by random pauses, with ``edge_s`` of silence at both ends; also each part's
    (start, end) in seconds."""
    out, spans, pos = [silence(edge_s)], [], edge_s
    for k, part in enumerate(parts):
        if k:
            gap = silence(rng.uniform(*pause_s))
            out.append(gap)
            pos += gap.size / SR
        out.append(part)
        spans.append((pos, pos + part.size / SR))
        pos += part.size / SR
    out.append(silence(edge_s))
    return np.concatenate(out), spans


# ----------------------------------------------------------------------------- backgrounds


def white_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise, unit variance."""
    return rng.standard_normal(int(seconds * SR)).astype(np.float32)


def pink_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """1/f noise (white noise shaped in the frequency domain), unit variance."""
    n = int(seconds * SR)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return (x / x.std()).astype(np.float32)


def _note(midi: float, seconds: float, decay: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f = 440.0 * 2 ** ((midi - 69) / 12)
    x = sum(np.sin(2 * np.pi * f * h * t) / h**1.3 for h in (1, 2, 3, 4, 5))
    attack = np.minimum(1.0, t / 0.01)
    return (x * attack * np.exp(-decay * t)).astype(np.float32)


def chords(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A chord progression (triads, one per 0.5-1 s)."""
    roots = [48, 53, 55, 57, 50, 52]
    out, total = [], 0
    while total < seconds * SR:
        root = int(rng.choice(roots))
        dur = float(rng.uniform(0.5, 1.0))
        minor = rng.random() < 0.4
        x = sum(_note(root + k, dur, 1.5) for k in (0, 3 if minor else 4, 7, 12))
        out.append(x)
        total += x.size
    return np.concatenate(out)[: int(seconds * SR)]


def melody(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A pentatonic melody over a soft drone."""
    scale = [60, 62, 64, 67, 69, 72, 74, 76]
    out, total = [], 0
    while total < seconds * SR:
        x = _note(float(rng.choice(scale)), float(rng.choice([0.2, 0.25, 0.4, 0.5])), 4.0)
        out.append(x)
        total += x.size
    tune = np.concatenate(out)[: int(seconds * SR)]
    drone = 0.2 * _note(48, seconds, 0.0)[: tune.size]
    return tune + drone


def drums(seconds: float, rng: np.random.Generator, bpm: float = 110.0) -> np.ndarray:
    """Kick (decaying sine sweep), snare (noise burst) and hi-hat (short high noise) on a grid."""
    n, step = int(seconds * SR), int(SR * 60 / bpm / 2)
    x = np.zeros(n, np.float32)
    t = np.arange(int(0.25 * SR)) / SR
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-30 * t)) * t) * np.exp(-12 * t)
    snare = rng.standard_normal(t.size) * np.exp(-20 * t) * 0.6
    hat = np.diff(rng.standard_normal(t.size // 4 + 1)) * np.exp(-60 * t[: t.size // 4]) * 0.3
    for k, pos in enumerate(range(0, n, step)):
        for hit, on in ((kick, k % 4 == 0), (snare, k % 4 == 2), (hat, True)):
            if on:
                end = min(n, pos + hit.size)
                x[pos:end] += hit[: end - pos]
    return x


def tone(freq_hz: float, seconds: float) -> np.ndarray:
    """A pure sine."""
    t = np.arange(int(seconds * SR)) / SR
    return np.sin(2 * np.pi * freq_hz * t).astype(np.float32)


def hum(mains_hz: float, seconds: float) -> np.ndarray:
    """Mains hum: the fundamental plus odd harmonics, as a ground loop sounds."""
    t = np.arange(int(seconds * SR)) / SR
    return sum(np.sin(2 * np.pi * mains_hz * h * t) / h for h in (1, 3, 5, 7)).astype(np.float32)


def music(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Synthesised music by name: ``chords``, ``melody``, ``drums`` or ``band`` (all three)."""
    if kind == "band":
        return norm(chords(seconds, rng)) + 0.7 * norm(melody(seconds, rng)) + 0.5 * norm(drums(seconds, rng))
    return {"chords": chords, "melody": melody, "drums": drums}[kind](seconds, rng)


def norm(x: np.ndarray, peak: float = 0.5) -> np.ndarray:
    """Scaled to a peak amplitude."""
    m = float(np.abs(x).max()) if x.size else 0.0
    return (x * (peak / m)).astype(np.float32) if m > 0 else x.astype(np.float32)


def mix_at_snr(speech: np.ndarray, background: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` plus ``background`` (looped or cut to length) at ``snr_db`` against the speech's
    active (non-silent) power."""
    reps = int(np.ceil(speech.size / max(1, background.size)))
    bg = np.tile(background, reps)[: speech.size].astype(np.float64)
    active = speech[np.abs(speech) > 1e-3]
    p_sig = float(np.mean(active.astype(np.float64) ** 2)) if active.size else 1e-6
    p_bg = float(np.mean(bg**2)) or 1e-12
    return (speech + bg * np.sqrt(p_sig / p_bg / 10 ** (snr_db / 10))).astype(np.float32)


# ----------------------------------------------------------------------------- encoders


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono float32 with FFmpeg's swresample (through PyAV)."""
    if sr_in == sr_out:
        return x
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x, np.float32)[None, :], format="flt", layout="mono")
    frame.sample_rate = sr_in
    rs = av.AudioResampler(format="flt", layout="mono", rate=sr_out)
    out = [f.to_ndarray()[0] for f in rs.resample(frame)] + [f.to_ndarray()[0] for f in rs.resample(None)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}
"""Extension → soundfile (format, subtype); ``m4a`` goes through PyAV."""


def encode(x: np.ndarray, dest: Path, rate_hz: int) -> None:
    """Write ``x`` (at :data:`SR`) to ``dest`` in the format its extension names, at ``rate_hz``."""
    ext = dest.suffix.lstrip(".")
    y = np.clip(resample(x, SR, rate_hz), -0.99, 0.99)
    if ext in FORMATS:
        fmt, subtype = FORMATS[ext]
        sf.write(dest, y, rate_hz, format=fmt, subtype=subtype)
    elif ext == "m4a":
        _encode_aac(y, dest, rate_hz)
    else:
        raise ValueError(f"{dest}: no encoder for .{ext}")


def _encode_aac(y: np.ndarray, dest: Path, rate_hz: int) -> None:
    with av.open(str(dest), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate_hz)
        stream.layout = "mono"
        stream.bit_rate = 48000
        for start in range(0, y.size, 1024):
            frame = av.AudioFrame.from_ndarray(y[None, start : start + 1024].astype(np.float32), format="flt",
                                               layout="mono")
            frame.sample_rate = rate_hz
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


# ----------------------------------------------------------------------------- broken files


def write_broken(how: str, dest: Path, donor: Path | None = None) -> None:
    """A file that is not usable audio: ``zero_bytes``, ``truncated`` (the first 300 bytes of
    ``donor``: headers, no whole audio frame), ``text`` (plain text under an audio name), ``png``
    (image bytes), ``random`` (seeded noise bytes), ``wrong_extension`` (``donor``'s bytes under
    another extension: decodable by content)."""
    if how == "zero_bytes":
        dest.write_bytes(b"")
    elif how == "truncated":
        dest.write_bytes(Path(donor).read_bytes()[:300])
    elif how == "text":
        dest.write_text("This is not audio. It is a README that was saved with an audio file name.\n" * 20)
    elif how == "png":
        dest.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    elif how == "random":
        dest.write_bytes(np.random.default_rng(len(dest.name)).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif how == "wrong_extension":
        dest.write_bytes(Path(donor).read_bytes())
    else:
        raise ValueError(f"unknown broken-file kind {how!r}")
