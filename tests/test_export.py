"""Export: a GGUF written from a Llama folder reads back in transformers with the same tokenizer and logits."""

from __future__ import annotations

import json
import shutil

import pytest

from inference.export import main as export_main

PROMPTS = [
    "<|im_start|>user\nPremium IPTV 12 months, 18,000 channels, M3U link.<|im_end|>\n<|im_start|>assistant\n",
    "Poker night art print, vintage playing cards, A3 PDF.",
    "Bank login clone kit, captures passwords and 2FA codes.",
]
# Max |logit difference| allowed, relative to the largest |logit| of the source model on the same prompt.
TOLERANCE = {"f16": 2e-3, "q8_0": 2e-2}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    """A run folder around the tiny random Llama (its manifest names the policy and prompt settings)."""
    run = tmp_path_factory.mktemp("run")
    shutil.copytree(tiny_model_dir, run / "merged")
    (run / "manifest.json").write_text(json.dumps({"policy": "marketplace", "prompt": {"style": "compact"}}))
    return run


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_round_trip(run_dir, quant, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    export_main(["gguf", str(run_dir), "--quant", quant])
    folder = run_dir / "gguf"
    name = f"{run_dir.name}-{quant}.gguf"
    assert f"wrote {folder / name}" in capsys.readouterr().out

    source = AutoModelForCausalLM.from_pretrained(run_dir / "merged").eval()
    source_tokenizer = AutoTokenizer.from_pretrained(run_dir / "merged")
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    assert tokenizer.chat_template == source_tokenizer.chat_template
    assert (tokenizer.eos_token, tokenizer.pad_token) == (source_tokenizer.eos_token, source_tokenizer.pad_token)
    for prompt in PROMPTS:
        ids = source_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert tokenizer(prompt, add_special_tokens=False)["input_ids"] == ids
        with torch.no_grad():
            expected = source(torch.tensor([ids])).logits
            got = model(torch.tensor([ids])).logits
        assert (got - expected).abs().max() <= TOLERANCE[quant] * expected.abs().max()
        assert torch.equal(got.argmax(-1), expected.argmax(-1))

    modelfile = (folder / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{name}\n")
    assert "non_fiat_currency" in modelfile and "PARAMETER temperature 0" in modelfile


def test_ct2_export_and_user_errors(run_dir, tmp_path, capsys):
    export_main(["ct2", str(run_dir), "--quant", "int8"])
    assert (run_dir / "ct2-int8" / "model.bin").is_file()
    for args, message in [
        (["gguf", str(run_dir), "--quant", "q4_0"], "gguf takes f16, q8_0"),
        (["gguf", str(tmp_path / "missing")], "not a run folder or local model folder"),
    ]:
        with pytest.raises(SystemExit):
            export_main(args)
        assert message in capsys.readouterr().err
