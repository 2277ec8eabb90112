"""Offline CLIP and T5 tokenizers trained on a caption corpus, for tiny and embedded models.

Real SD3/FLUX checkpoints ship their tokenizers; a model built from configs (the test fixtures, the embedded
default model) needs its own without a download. Both builders return ordinary `transformers` tokenizer
classes, so they save with `save_pretrained`, load back with `from_pretrained(folder)` and go through the
pipelines' own `encode_prompt` like the real ones (docs/algorithms.md, "The embedded model").
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

from transformers import CLIPTokenizer, T5Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
CLIP_WORD_END = "</w>"

T5_PAD, T5_EOS, T5_UNK = "<pad>", "</s>", "<unk>"
T5_WORD_START = "▁"
# Unigram picks the segmentation with the highest total score. A corpus word scores its log-frequency
# (above -28 for any realistic corpus), which beats "▁" plus even one character (-28), so caption words stay
# whole; characters are the costly last resort that keeps unseen ASCII text lossless.
T5_WORD_START_SCORE = -8.0
T5_CHAR_SCORE = -20.0
# The pipelines refuse max_sequence_length > 512; real T5 tokenizers declare the same limit.
T5_MODEL_MAX_LENGTH = 512


def build_clip_tokenizer(
    corpus: Iterable[str], merges: int = 300, model_max_length: int = 77, pad_token: str = CLIP_EOS
) -> CLIPTokenizer:
    """A byte-level BPE CLIP tokenizer with up to `merges` merges learned from `corpus`.

    The vocabulary is laid out like OpenAI CLIP's: the 256 byte characters, the same with `</w>`, one entry
    per merge in rank order, then `<|startoftext|>` and `<|endoftext|>`. End-of-text has the largest id, so
    CLIP's pooling picks it whether it takes the argmax id or the first eos id. Every byte is in the
    vocabulary, so unseen text falls back to bytes and never becomes unknown; it decodes back unchanged up
    to CLIP's own normalisation (lower case, and a space after each word, digit and run of punctuation).
    SD3's second encoder pads with `pad_token="!"`, as CLIP-G does. The same corpus always gives the same
    tokenizer.
    """
    # Split words with exactly the normalizer and pre-tokenizer the final tokenizer applies, so the learned
    # merges match the pieces it will see.
    reference = CLIPTokenizer().backend_tokenizer
    words: Counter[tuple[str, ...]] = Counter()
    for text in corpus:
        for piece, _ in reference.pre_tokenizer.pre_tokenize_str(reference.normalizer.normalize_str(text)):
            words[(*piece[:-1], piece[-1] + CLIP_WORD_END)] += 1
    merge_pairs = _learn_bpe_merges(words, merges)
    byte_chars = list(bytes_to_unicode().values())

    vocab: dict[str, int] = {}
    for token in [
        *byte_chars,
        *(c + CLIP_WORD_END for c in byte_chars),
        *(a + b for a, b in merge_pairs),
        CLIP_BOS,
        CLIP_EOS,
    ]:
        vocab.setdefault(token, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merge_pairs, model_max_length=model_max_length, pad_token=pad_token)


def build_t5_tokenizer(corpus: Iterable[str]) -> T5Tokenizer:
    """A Unigram T5 tokenizer with one piece per corpus word, built by hand.

    `UnigramTrainer` collapses to single characters on a small corpus, so the pieces are laid out directly:
    `<pad>`, `</s>`, `<unk>` at ids 0, 1, 2 as in T5, the bare word start `▁`, `▁word` scored by
    log-frequency for each corpus word (most frequent first, ties by spelling, so the layout is
    deterministic), then printable ASCII characters as a fallback: unseen ASCII text is spelled out and
    decodes back unchanged; anything else becomes `<unk>`. No sentinel (`<extra_id_*>`) tokens.
    """
    counts = Counter(word for text in corpus for word in re.findall(r"\w+", text))
    total = sum(counts.values())
    words = sorted(counts, key=lambda word: (-counts[word], word))
    pieces: list[tuple[str, float]] = [
        (T5_PAD, 0.0),
        (T5_EOS, 0.0),
        (T5_UNK, 0.0),
        (T5_WORD_START, T5_WORD_START_SCORE),
    ]
    pieces += [(T5_WORD_START + word, math.log(counts[word] / total)) for word in words]
    pieces += [(chr(code), T5_CHAR_SCORE) for code in range(ord("!"), ord("~") + 1)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=T5_MODEL_MAX_LENGTH)


def _learn_bpe_merges(words: Counter[tuple[str, ...]], merges: int) -> list[tuple[str, str]]:
    """Greedy BPE over word counts: merge the most frequent adjacent pair until `merges` or none is left.

    Written out because `tokenizers`' BpeTrainer breaks ties between equally frequent pairs in hash order,
    which changes from one build to the next; here ties go to the smallest pair, so the result is
    deterministic. Pairs seen once are merged too, so with enough merges every corpus word becomes one token.
    """
    segmented = dict(words)
    learned: list[tuple[str, str]] = []
    while len(learned) < merges:
        pair_counts: Counter[tuple[str, str]] = Counter()
        for symbols, count in segmented.items():
            for pair in zip(symbols, symbols[1:], strict=False):
                pair_counts[pair] += count
        if not pair_counts:
            break
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        learned.append(best)
        segmented = {_merge_pair(symbols, best): count for symbols, count in segmented.items()}
    return learned


def _merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if symbols[i : i + 2] == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)
