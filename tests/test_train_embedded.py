"""Training the embedded model (nodes/embedded/train.py): continuing from a trained model (`--init-from`) carries
every matching weight over, and token embeddings word piece by word piece when the vocabularies differ."""

from __future__ import annotations

from pathlib import Path

import torch

from nodes.embedded import train
from nodes.embedded.train import TrainConfig, build_pipeline, warm_start


def test_warm_start_copies_every_weight_and_the_rows_of_shared_word_pieces(tmp_path: Path, monkeypatch):
    # The source model knew fewer words: its tokenizers were built from two captions only.
    monkeypatch.setattr(train, "caption_corpus", lambda: ["a red circle on a blue background", "big star"])
    source = build_pipeline(TrainConfig(seed=1))
    source.vae.register_to_config(shift_factor=0.25, scaling_factor=1.5)
    source.save_pretrained(tmp_path / "source")
    monkeypatch.undo()

    pipe = build_pipeline(TrainConfig(seed=2))
    fresh = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    warm_start(pipe, tmp_path / "source")

    for name in ("vae", "transformer"):
        for key, value in getattr(source, name).state_dict().items():
            assert torch.equal(getattr(pipe, name).state_dict()[key], value), (name, key)
    assert (pipe.vae.config.shift_factor, pipe.vae.config.scaling_factor) == (0.25, 1.5)
    old_vocab, new_vocab = source.tokenizer.get_vocab(), pipe.tokenizer.get_vocab()
    assert len(new_vocab) > len(old_vocab), "the new corpus has more word pieces"
    rows = pipe.text_encoder.get_input_embeddings().weight
    old_rows = source.text_encoder.get_input_embeddings().weight
    shared = [piece for piece in new_vocab if piece in old_vocab]
    only_new = [piece for piece in new_vocab if piece not in old_vocab]
    assert shared and only_new
    for piece in shared:
        assert torch.equal(rows[new_vocab[piece]], old_rows[old_vocab[piece]]), piece
    for piece in only_new:
        assert torch.equal(rows[new_vocab[piece]], fresh[new_vocab[piece]]), piece
    layer = "text_model.encoder.layers.0.self_attn.q_proj.weight"
    assert torch.equal(pipe.text_encoder_2.state_dict()[layer], source.text_encoder_2.state_dict()[layer])


def test_the_tokenizers_know_every_training_word_as_one_piece():
    """A caption word split into bytes costs tokens of the 16 the model reads; training words never are."""
    pipe = build_pipeline(TrainConfig())
    for word in ("triangle", "diamond", "background", "violet", "little", "front", "against"):
        assert len(pipe.tokenizer.tokenize(word)) == 1, word


def test_the_cli_passes_init_from(monkeypatch, tmp_path: Path):
    from app import commands
    from app.cli import build_parser

    seen = {}
    monkeypatch.setattr(train, "train", lambda config, resume=False: seen.setdefault("config", config))
    args = build_parser().parse_args(["train-embedded", "--minutes", "1", "--init-from", str(tmp_path)])
    assert commands.train_embedded(args) == 0
    assert seen["config"].init_from == tmp_path and seen["config"].minutes == 1
