"""Captions as people write them (nodes/embedded/captions.py): they promise only what the image shows, the
held-out phrasings never occur in training captions, and every caption fits the committed model's tokenizer."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from transformers import CLIPTokenizer

from nodes.embedded import captions, dataset
from nodes.embedded.captions import KNOWN_WORDS, SYNONYMS, describe, normalise
from nodes.models.loader import REPO_MODELS

SAMPLES = 6000


def sampled(held_out: bool, seed: int, count: int = SAMPLES) -> list[tuple[dataset.Scene, captions.Caption]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        scene = dataset.sample_training_scene(rng)
        pairs.append((scene, describe(scene, rng, held_out=held_out)))
    return pairs


@pytest.fixture(scope="module")
def training() -> list[tuple[dataset.Scene, captions.Caption]]:
    return sampled(False, 1)


@pytest.fixture(scope="module")
def held_out() -> list[tuple[dataset.Scene, captions.Caption]]:
    return sampled(True, 2)


def said(text: str) -> dict[str, Counter[str]]:
    """The attribute values a caption's words name, per category (synonyms mapped to the dataset's names)."""
    found: dict[str, Counter[str]] = {"colour": Counter(), "shape": Counter(), "size": Counter()}
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in KNOWN_WORDS:
            category, value = KNOWN_WORDS[word]
            found[category][value] += 1
    return found


@pytest.mark.parametrize("held_out_phrasings", [False, True])
def test_a_caption_names_exactly_the_attributes_it_promises_and_the_image_has(training, held_out, held_out_phrasings):
    for scene, caption in held_out if held_out_phrasings else training:
        found = said(caption.text)
        colours = Counter(
            [scene.colour] * ("colour" in caption.named) + [scene.background] * ("background" in caption.named)
        )
        assert found["colour"] == colours, caption
        assert found["shape"] == Counter([scene.shape] * ("shape" in caption.named)), caption
        assert found["size"] == Counter([scene.size] * ("size" in caption.named)), caption
        assert caption.named & {"colour", "shape"}, "the object is always named by something"


def test_attributes_are_left_out_at_their_rates_and_held_out_captions_always_name_the_object(training, held_out):
    for name, rate in captions.OMIT_RATE.items():
        left_out = np.mean([name not in c.named for _, c in training])
        assert abs(left_out - rate) < 0.03, (name, left_out)
    assert all({"colour", "shape"} <= c.named for _, c in held_out)


def test_held_out_phrasings_never_occur_in_training_captions(training, held_out):
    seen = {normalise(c.text) for _, c in training} | {normalise(t) for t in _training_corpus_sample()}
    for _, caption in held_out:
        assert normalise(caption.text) not in seen, caption
    assert {c.phrasing for _, c in training} == {*captions.TRAINING_PHRASINGS, captions.TRAINING_OBJECT_ONLY}
    assert {c.phrasing for _, c in held_out} == {*captions.HELD_OUT_PHRASINGS, captions.HELD_OUT_OBJECT_ONLY}
    assert not set(captions.TRAINING_PHRASINGS) & set(captions.HELD_OUT_PHRASINGS)


def _training_corpus_sample() -> list[str]:
    from nodes.embedded.train import caption_corpus

    return caption_corpus()[:20_000]


def test_captions_vary_as_typing_does(training):
    texts = [c.text for _, c in training]
    words = Counter(w for t in texts for w in re.findall(r"[a-z]+", t.lower()))
    for synonyms in SYNONYMS.values():
        assert all(words[w] > 0 for w in synonyms), synonyms
    assert any(t.isupper() for t in texts) and any(t[:1].isupper() and not t.isupper() for t in texts)
    assert any(t.rstrip().endswith(".") for t in texts) and any("  " in t for t in texts)
    assert any(" in " in t and " in front of " not in t for t in texts), "the 'circle in red' form"
    assert any(not t.strip().lower().startswith(("a ", "an ")) for t in texts), "articles are sometimes dropped"


def test_captions_are_deterministic_per_seed():
    assert [c.text for _, c in sampled(False, 5, 200)] == [c.text for _, c in sampled(False, 5, 200)]
    assert [c.text for _, c in sampled(False, 5, 200)] != [c.text for _, c in sampled(False, 6, 200)]


@pytest.mark.parametrize("folder", ["tokenizer", "tokenizer_2"])
def test_every_caption_fits_the_committed_models_text_window(training, held_out, folder):
    """A caption cut short would lose its background: the longest must fit the 16 tokens the model reads."""
    tokenizer = CLIPTokenizer.from_pretrained(REPO_MODELS / "shapes" / folder)
    lengths = [len(tokenizer(c.text).input_ids) for _, c in training + held_out]
    assert max(lengths) <= tokenizer.model_max_length


def test_the_vocabulary_lists_every_word_captions_use():
    vocabulary = captions.vocabulary()
    assert (vocabulary.colour, vocabulary.shape, vocabulary.size) == (dataset.COLOURS, dataset.SHAPES, dataset.SIZES)
    for word, (category, _) in KNOWN_WORDS.items():
        assert vocabulary.knows(category, word), word


@pytest.fixture(scope="module")
def corpus_words() -> set[str]:
    """Every word of the captions the tokenizer's merges were learned from."""
    return {w for t in _training_corpus_sample() for w in re.findall(r"[a-z]+", t.lower())}


def test_training_captions_sometimes_carry_a_made_up_word_and_held_out_ones_only_their_own_new_words(
    training, held_out, corpus_words
):
    made_up = [c.text for _, c in training if set(re.findall(r"[a-z]+", c.text.lower())) - corpus_words]
    assert 0.05 < len(made_up) / len(training) < captions.NONSENSE_RATE, len(made_up)
    new_in_held_out = {w for _, c in held_out for w in re.findall(r"[a-z]+", c.text.lower())} - corpus_words
    assert new_in_held_out == {"top", "coloured"}


def test_half_the_made_up_words_end_in_a_known_words_token_as_an_unseen_word_like_coloured_does(training, corpus_words):
    tokenizer = CLIPTokenizer.from_pretrained(REPO_MODELS / "shapes" / "tokenizer")
    assert tokenizer.tokenize("coloured")[-1] == "red</w>", "the reason for glued made-up words is gone"
    made_up = [w for _, c in training for w in re.findall(r"[a-z]+", c.text.lower()) if w not in corpus_words]
    glued = [w for w in made_up if any(w.endswith(known) for known in captions.GLUED_WORDS)]
    assert 0.4 < len(glued) / len(made_up) < 0.6, (len(glued), len(made_up))
    ends_in_its_token = [w for w in glued if tokenizer.tokenize(w)[-1].removesuffix("</w>") in captions.GLUED_WORDS]
    assert len(ends_in_its_token) > 0.8 * len(glued)
    assert "coloured" not in made_up
