"""The CTranslate2 engine: same completions as the transformers path, stop at `</answer>`, cached conversion."""

from __future__ import annotations

import itertools
import json

import pytest

from inference import load_moderator
from inference.ct2 import SOURCE, convert
from inference.generate import GenerationConfig
from moderation.errors import UserError

ANSWER = "<answer>ALLOW</answer>"
LISTINGS = ["Premium IPTV 12 months, 18,000 channels, M3U link.", "Poker art print", "Notion budget template."]


@pytest.fixture(scope="module")
def echo_model_dir(tmp_path_factory, tokenizer):
    """A Llama whose next token depends only on the current one, wired to write `<answer>ALLOW</answer>` right after
    the prompt and then keep going (`ALLOW</answer>ALLOW...`): a model that needs the stop at `</answer>`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    turn = [{"role": "user", "content": "x"}]
    prompt = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    start = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    chain = [start[-1], *tokenizer(ANSWER, add_special_tokens=False)["input_ids"]]
    successor: dict[int, int] = {}
    for current, following in itertools.pairwise(chain):
        assert successor.setdefault(current, following) == following, "the chain must be a function of one token"
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for layer in model.model.layers:  # layers add nothing: the last hidden state is the current token's embedding
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        model.model.norm.weight.fill_(1.0)
        for dim, (current, following) in enumerate(successor.items()):
            model.model.embed_tokens.weight[current, dim] = 1.0
            model.lm_head.weight[following, dim] = 10.0
    path = tmp_path_factory.mktemp("echo-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_both_engines_stop_at_answer(echo_model_dir, compute_type):
    generation = GenerationConfig(max_new_tokens=24, batch_size=2)
    reference = load_moderator(echo_model_dir, "transformers", generation=generation).moderate(LISTINGS)
    ct2 = load_moderator(echo_model_dir, "ct2", compute_type, generation=generation).moderate(LISTINGS)
    assert [r.completion for r in reference] == [ANSWER] * len(LISTINGS)
    assert [r.completion for r in ct2] == [ANSWER] * len(LISTINGS)
    assert [r.verdict for r in ct2] == [r.verdict for r in reference]


def test_float32_matches_transformers_token_for_token(tiny_model_dir):
    """Random weights, prompts of different lengths, batches split by max_batch_size: same greedy completions."""
    generation = GenerationConfig(max_new_tokens=12, batch_size=2)
    reference = load_moderator(tiny_model_dir, "transformers", generation=generation)
    ct2 = load_moderator(tiny_model_dir, "ct2", "float32", generation=generation)
    assert [reference.prompt_ids(text) for text in LISTINGS] == [ct2.prompt_ids(text) for text in LISTINGS]
    assert [r.completion for r in ct2.moderate(LISTINGS)] == [r.completion for r in reference.moderate(LISTINGS)]


def test_conversion_is_cached_and_redone_when_weights_change(tmp_path, tiny_model_dir):
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    source = tmp_path / "merged"
    shutil.copytree(tiny_model_dir, source)
    first = convert(source, "int8")
    assert first == tmp_path / "ct2-int8"
    built = (first / "model.bin").stat().st_mtime_ns
    assert convert(source, "int8") == first
    assert (first / "model.bin").stat().st_mtime_ns == built

    model = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        model.model.norm.weight.mul_(2.0)
    model.save_pretrained(source)
    stamp = json.loads((first / SOURCE).read_text())
    convert(source, "int8")
    assert json.loads((first / SOURCE).read_text())["sha256"] != stamp["sha256"]


def test_user_errors(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="ct2 takes --compute-type int8, int8_float32, float32, not 'float16'"):
        convert(tiny_model_dir, "float16")
    with pytest.raises(UserError, match="not a local HF model folder"):
        convert(tmp_path, "int8")
    with pytest.raises(UserError, match="vllm"):
        load_moderator(tiny_model_dir, "vllm")
    with pytest.raises(UserError, match="unknown engine"):
        load_moderator(tiny_model_dir, "onnx")


def test_evals_run_with_ct2_engine(tmp_path, tiny_model_dir, tiny_dataset_dir):
    from evals.__main__ import main

    out = tmp_path / "eval"
    args = ["run", "--model", str(tiny_model_dir), "--data", str(tiny_dataset_dir / "train.parquet"), "--out", str(out)]
    main([*args, "--engine", "ct2", "--compute-type", "float32", "--max-new-tokens", "4", "--limit", "3"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["identity"]["engine"], manifest["identity"]["compute_type"]) == ("ct2", "float32")
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 3


def test_fast_scores_match_the_transformers_fast_mode(tiny_model_dir):
    """Same P(DISALLOW) and category shares as the transformers one-pass FastScorer, listings of different lengths,
    with fast mode's empty reasoning and after a written one (reasoning mode's reading)."""
    from inference.ct2 import CT2FastScorer
    from inference.fast_scoring import FastScorer

    listings = [*LISTINGS, "Fixed-match betting tips", "x"]
    engines = ("transformers", "ct2")
    reference_scorer, scorer = (load_moderator(tiny_model_dir, e, "float32").fast_scorer() for e in engines)
    assert (type(reference_scorer), type(scorer)) == (FastScorer, CT2FastScorer)
    reasonings = ["Sells IPTV access.", "", "Betting tips sold as sure wins.", "", "A short one."][: len(listings)]
    reasonings += [""] * (len(listings) - len(reasonings))
    reference = reference_scorer.score(listings) + reference_scorer.score(listings, reasonings)
    scores = scorer.score(listings) + scorer.score(listings, reasonings)
    for got, expected in zip(scores, reference, strict=True):
        assert got.p_disallow == pytest.approx(expected.p_disallow, abs=1e-4)
        assert got.category_share == pytest.approx(expected.category_share, abs=1e-4)
