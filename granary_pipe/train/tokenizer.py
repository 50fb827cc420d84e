"""SentencePiece tokenizer(s) trained on a release's training transcripts, as CTC labels: 0 the blank, then
the <lang> tags (``lang_tags``, languages sorted), then the pieces of each tokenizer ("*" when shared, else one
per language, concatenated into one output layer as NeMo's aggregate tokenizer)."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable

from granary_pipe.text import fold, strip_symbols
from granary_pipe.train.config import TokenizerConfig

SHARED = "*"


def normalize_text(text: str, mode: str = "lower_nopunct") -> str:
    """Text as the model learns it: ``lower_nopunct`` = :func:`granary_pipe.text.fold`, symbols but apostrophes
    removed, spaces collapsed, numbers as written; ``none`` = spaces collapsed only."""
    if mode == "none":
        return " ".join(text.split())
    return strip_symbols(fold(text), keep="'")


def train_sentencepiece(texts: Iterable[str], cfg: TokenizerConfig) -> bytes:
    """One serialised SentencePiece model of ``texts``; one thread, in the given order: deterministic."""
    import sentencepiece as spm

    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("no transcripts to train the tokenizer on")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, vocab_size=cfg.vocab_size,
        model_type=cfg.model_type, character_coverage=cfg.character_coverage,
        hard_vocab_limit=False, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
        num_threads=1, shuffle_input_sentence=False, minloglevel=2,
    )
    return buf.getvalue()


class Tokenizer:
    """One or several SentencePiece models behind CTC label ids (blank = 0)."""

    def __init__(self, models: dict[str, bytes], *, lang_tags: list[str] | None = None,
                 text_norm: str = "lower_nopunct"):
        import sentencepiece as spm

        if not models:
            raise ValueError("a tokenizer needs at least one SentencePiece model")
        self.models = dict(sorted(models.items()))
        self.lang_tags = sorted(lang_tags or [])
        self.text_norm = text_norm
        self._sp: dict[str, spm.SentencePieceProcessor] = {}
        self._offset: dict[str, int] = {}
        offset = 1 + len(self.lang_tags)
        for key, proto in self.models.items():
            sp = spm.SentencePieceProcessor(model_proto=proto)
            self._sp[key], self._offset[key] = sp, offset
            offset += sp.get_piece_size()
        self.vocab_size = offset
        self._ranges = sorted((off, off + self._sp[k].get_piece_size(), k) for k, off in self._offset.items())

    @property
    def shared(self) -> bool:
        return list(self.models) == [SHARED]

    def _key(self, lang: str | None) -> str:
        if self.shared:
            return SHARED
        if lang not in self._sp:
            raise ValueError(f"no tokenizer for language {lang!r} (have: {', '.join(self._sp)})")
        return lang

    def encode(self, text: str, lang: str | None = None, *, normalized: bool = False) -> list[int]:
        """Label ids (>= 1) of ``text``; with lang tags the first id is ``<lang>``."""
        if not normalized:
            text = normalize_text(text, self.text_norm)
        key = self._key(lang)
        off = self._offset[key]
        ids = [off + i for i in self._sp[key].encode(text)]
        if self.lang_tags:
            if lang not in self.lang_tags:
                raise ValueError(f"no <lang> tag for {lang!r} (have: {', '.join(self.lang_tags)})")
            ids.insert(0, 1 + self.lang_tags.index(lang))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of label ids; blanks and <lang> tags are dropped, runs of one tokenizer joined."""
        words = [self._sp[key].decode([i - self._offset[key] for i in run])
                 for key, run in itertools.groupby(ids, self._owner) if key is not None]
        return " ".join(w for w in words if w)

    def _owner(self, label: int) -> str | None:
        return next((k for lo, hi, k in self._ranges if lo <= label < hi), None)

    def lang_of(self, ids: list[int]) -> str | None:
        """The language whose <lang> tag comes first in ``ids``."""
        return next((self.lang_tags[i - 1] for i in ids if 1 <= i <= len(self.lang_tags)), None)

    def state(self) -> dict:
        """Plain-data form for checkpoints (bytes, lists, strings)."""
        return {"models": dict(self.models), "lang_tags": list(self.lang_tags), "text_norm": self.text_norm}

    @classmethod
    def from_state(cls, state: dict) -> "Tokenizer":
        return cls(state["models"], lang_tags=state["lang_tags"], text_norm=state["text_norm"])

    def __reduce__(self):  # picklable for DataLoader workers and Ray: rebuilt there from its state
        return Tokenizer.from_state, (self.state(),)


def build_tokenizer(texts_by_lang: dict[str, list[str]], cfg: TokenizerConfig, text_norm: str) -> Tokenizer:
    """Train the tokenizer(s) on already-normalised texts per language."""
    langs = sorted(texts_by_lang)
    if cfg.shared:
        models = {SHARED: train_sentencepiece((t for lang in langs for t in texts_by_lang[lang]), cfg)}
    else:
        models = {lang: train_sentencepiece(texts_by_lang[lang], cfg) for lang in langs}
    return Tokenizer(models, lang_tags=langs if cfg.lang_tags else None, text_norm=text_norm)
