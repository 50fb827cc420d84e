"""Training data: deterministic WebDataset stream, duration buckets, resume skip, worker order,
rank split, held-out split, tokenizers, padded waveform batches (features: test_train_features)."""

from __future__ import annotations

import pickle

import pytest
import torch

from granary_pipe.train.config import DataConfig, TokenizerConfig
from granary_pipe.train.data import (
    ReleaseBatches,
    bucket_batches,
    is_held_out,
    make_loader,
    open_release,
    sample_stream,
    training_texts,
)
from granary_pipe.train.tokenizer import Tokenizer, build_tokenizer, normalize_text

try:
    from tests.test_train_fixtures import TINY_UTTERANCES, tiny_release  # noqa: F401 (fixture)
except ImportError:
    from test_train_fixtures import TINY_UTTERANCES, tiny_release  # noqa: F401

ALL_IDS = sorted(f"tiny-{lang}-{k:03d}" for k, (lang, _) in enumerate(TINY_UTTERANCES))
CFG = DataConfig(held_out_pct=0, shuffle_buffer=8, bucket_boundaries_s=[1.0, 2.0, 4.0], max_batch_s=4.0,
                 max_batch_size=3, loader_workers=0)


@pytest.fixture(scope="module")
def release(tiny_release):
    return open_release(tiny_release)


@pytest.fixture(scope="module")
def tokenizer(release):
    return build_tokenizer(training_texts(release, CFG), TokenizerConfig(vocab_size=40, model_type="char"),
                           CFG.text_norm)


def _ids(batches):
    return [b["ids"] for b in batches]


def test_buckets_bound_padded_seconds_and_cover_the_epoch_once(release):
    batches = list(bucket_batches(sample_stream(release, CFG, split="all"), CFG))
    ids = [s["meta"]["id"] for b in batches for s in b]
    assert sorted(ids) == ALL_IDS
    uppers = CFG.bucket_boundaries_s
    for b in batches:
        durs = [s["meta"]["duration_s"] for s in b]
        upper = next(u for u in uppers if max(durs) <= u)
        assert len(b) <= min(CFG.max_batch_size, CFG.max_batch_s // upper)
        assert len(b) * max(durs) <= CFG.max_batch_s
        # one bucket per batch
        assert {next(u for u in uppers if d <= u) for d in durs} == {upper}


def test_stream_is_a_function_of_seed_and_epoch(release):
    def order(seed, epoch):
        return [s["meta"]["id"] for s in sample_stream(release, CFG, split="all", seed=seed, epoch=epoch)]

    assert order(0, 0) == order(0, 0)
    assert order(0, 1) == order(0, 1)
    epochs = {tuple(order(0, e)) for e in range(4)}
    assert len(epochs) > 1
    assert order(1, 0) != order(0, 0) or order(1, 1) != order(0, 1)


def test_resume_skips_batches_without_changing_the_rest(release, tokenizer):
    def run(start, workers=0):
        ds = ReleaseBatches(release, CFG, tokenizer, split="all", seed=3, epoch=2, start=start)
        return list(make_loader(ds, workers))

    full = run(0)
    assert len(full) >= 4
    later = run(2)
    assert _ids(later) == _ids(full)[2:]
    assert [b["index"] for b in later] == list(range(2, len(full)))
    for a, b in zip(later, full[2:]):
        assert torch.equal(a["waves"], b["waves"]) and torch.equal(a["targets"], b["targets"])
    # two loader workers decode alternate batches; the loader returns them in order
    two = run(1, workers=2)
    assert _ids(two) == _ids(full)[1:]
    assert all(torch.equal(a["waves"], b["waves"]) for a, b in zip(two, full[1:]))


def test_loader_workers_run_across_epochs_in_stream_order_and_resume_mid_epoch(release, tokenizer):
    def run(workers, epoch=0, start=0):
        ds = ReleaseBatches(release, CFG, tokenizer, split="all", seed=5, epoch=epoch, start=start, epochs=3 - epoch)
        return [(b["epoch"], b["index"], tuple(b["ids"])) for b in make_loader(ds, workers)]

    one = run(0)
    assert run(2) == one and [e for e, _, _ in one].count(2) >= 3
    at = next(k for k, (e, i, _) in enumerate(one) if (e, i) == (1, 2))
    assert run(2, epoch=1, start=2) == one[at:]


@pytest.mark.parametrize("world", [2, 4])  # 3 shards: world 2 splits shards, world 4 splits samples
def test_ranks_read_disjoint_parts_that_cover_the_epoch(release, world):
    per_rank = [[s["meta"]["id"] for s in sample_stream(release, CFG, split="all", seed=0, epoch=1,
                                                         rank=r, world=world)] for r in range(world)]
    flat = [i for ids in per_rank for i in ids]
    assert sorted(flat) == ALL_IDS and all(per_rank)


def test_held_out_split_is_stable_and_sized_by_pct():
    ids = [f"utt-{k:05d}" for k in range(20000)]
    held = [i for i in ids if is_held_out(i, 5.0)]
    assert 0.045 < len(held) / len(ids) < 0.055
    assert held == [i for i in ids if is_held_out(i, 5.0)]
    assert set(held) <= {i for i in ids if is_held_out(i, 10.0)}  # growing pct only adds rows
    assert not any(is_held_out(i, 0.0) for i in ids[:1000])


def test_train_and_heldout_are_disjoint(release):
    cfg = CFG.model_copy(update={"held_out_pct": 40.0})
    train = {s["meta"]["id"] for s in sample_stream(release, cfg, split="train")}
    held = {s["meta"]["id"] for s in sample_stream(release, cfg, split="heldout")}
    assert train and held and not train & held and sorted(train | held) == ALL_IDS
    texts = training_texts(release, cfg)
    assert sum(len(v) for v in texts.values()) == len(train)


def test_training_texts_from_parquet_equal_those_from_wds(release, tmp_path):
    from granary_pipe.train.data import Release

    no_parquet = Release(release.root, {**release.info, "shards": [s for s in release.info["shards"]
                                                                     if s["format"] == "wds"]})
    a, b = training_texts(release, CFG), training_texts(no_parquet, CFG)
    assert {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}
    assert "hello world" in a["en"] and "danke schön" in a["de"]


def test_shared_tokenizer_round_trips_normalised_text(tokenizer):
    for _, text in TINY_UTTERANCES:
        ids = tokenizer.encode(text.upper() + "!")
        assert ids and min(ids) >= 1 and max(ids) < tokenizer.vocab_size
        assert tokenizer.decode(ids) == normalize_text(text)
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone.encode("guten tag") == tokenizer.encode("guten tag")


def test_per_language_tokenizers_with_lang_tags(release):
    tok = build_tokenizer(training_texts(release, CFG),
                          TokenizerConfig(vocab_size=40, model_type="char", shared=False, lang_tags=True),
                          CFG.text_norm)
    assert tok.lang_tags == ["de", "en"] and not tok.shared
    en, de = tok.encode("hello world", "en"), tok.encode("guten tag", "de")
    assert en[0] == 2 and de[0] == 1  # <de> = 1, <en> = 2 (sorted)
    assert not set(en[1:]) & set(de[1:])  # separate piece ranges
    assert tok.decode(en) == "hello world" and tok.decode(de) == "guten tag"
    assert tok.lang_of(de) == "de"
    with pytest.raises(ValueError, match="no tokenizer for language 'fr'"):
        tok.encode("bonjour", "fr")
    assert Tokenizer.from_state(tok.state()).decode(en) == "hello world"


def test_batches_hold_padded_16k_waveforms_for_the_device(release, tokenizer):
    """Workers decode and tokenise only: zero-padded float32 waveforms, their lengths and frame
    counts (``len // 160``); the log-mel is the training process's job (test_train_features)."""
    for b in make_loader(ReleaseBatches(release, CFG, tokenizer, split="all", shuffle=False), 0):
        waves, lens = b["waves"], b["wave_lens"]
        assert waves.dtype == torch.float32 and waves.shape == (len(b["ids"]), int(lens.max()))
        assert torch.equal(b["feat_lens"], lens // 160) and "feats" not in b
        for w, n in zip(waves, lens.tolist()):
            assert not w[n:].any() and w[:n].abs().max() > 0.01
        assert b["audio_s"] == pytest.approx(lens.sum().item() / 16000, abs=1e-3 * len(lens))


def test_a_release_url_is_downloaded_wds_only_then_read_locally(tiny_release, tmp_path):
    from granary_pipe.train.data import fetch_release, is_url

    url = (tiny_release / "release.json").resolve().as_uri()  # file://…: same code path as http(s)
    assert is_url(url)
    with pytest.raises(ValueError, match="URL"):
        open_release(url)
    local = open_release(fetch_release(url, tmp_path / "data", langs=["en"], progress=False))
    assert [p.name for p in local.shards("wds", ["en"])] == ["en-000000.tar", "en-000001.tar"]
    assert all(p.is_file() for p in local.shards("wds", ["en"]))
    assert not list((tmp_path / "data").rglob("*.parquet"))
    cfg = CFG.model_copy(update={"langs": ["en"]})
    assert len(list(sample_stream(local, cfg, split="all"))) == 5
