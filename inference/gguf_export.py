"""Write a Llama-architecture HF model folder as one GGUF file (f16 or q8_0) for llama.cpp and Ollama.

gguf-py 0.19 has the writer, the tensor-name map and the quantizers but no HF -> GGUF converter (that is llama.cpp's
`convert_hf_to_gguf.py`, not packaged), so this is the minimal Llama part of it: hyperparameters as `llama.*` keys,
the tokenizer as gpt2-style byte-level BPE (tokens, types, merges, special ids) plus the chat template, and tensors
renamed with `gguf.TensorNameMap`. Q and K projections are permuted from HF's rotary layout to GGML's, exactly as
llama.cpp does (transformers undoes it when it reads a GGUF back, which the round-trip test relies on).
"""

from __future__ import annotations

from pathlib import Path

from inference.models import load_tokenizer
from moderation.errors import UserError
from moderation.files import atomic_path

QUANTS = ("f16", "q8_0")
# llama.cpp picks its pre-tokenizer regex by this name; SmolLM2's (digits split, then byte-level) is "smollm".
DEFAULT_PRE_TOKENIZER = "smollm"


def permute(weights, n_head: int, n_head_kv: int | None = None):
    """HF rotary layout (halves) -> GGML's (interleaved pairs), per head; llama.cpp's `LlamaModel.permute`."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    shape = weights.shape
    return weights.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def export_gguf(
    model_dir: str | Path, out: str | Path, quant: str = "f16", pre_tokenizer: str = DEFAULT_PRE_TOKENIZER
) -> Path:
    """Write `model_dir` (an HF Llama folder with its tokenizer) to the GGUF file `out`, atomically."""
    import gguf
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if quant not in QUANTS:
        raise UserError(f"unknown GGUF quantization {quant!r} (choose from {', '.join(QUANTS)})")
    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type != "llama":
        raise UserError(f"GGUF export supports Llama-architecture models; {model_dir} is {config.model_type!r}")
    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {"rope_theta": getattr(config, "rope_theta", 10000.0)}

    with atomic_path(out) as staging:
        writer = gguf.GGUFWriter(staging, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        writer.add_name(Path(model_dir).resolve().name)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(config.num_attention_heads)
        writer.add_head_count_kv(config.num_key_value_heads)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(float(rope["rope_theta"]))
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_vocab_size(config.vocab_size)
        file_type = gguf.LlamaFileType.MOSTLY_F16 if quant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_tokenizer(writer, tokenizer, config.vocab_size, pre_tokenizer, Path(model_dir))

        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
        for hf_name, tensor in model.state_dict().items():
            if hf_name == "lm_head.weight" and config.tie_word_embeddings:
                continue
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise UserError(f"GGUF export: no GGUF name for tensor {hf_name!r}")
            data = tensor.numpy()
            if name.endswith("attn_q.weight"):
                data = permute(data, config.num_attention_heads)
            elif name.endswith("attn_k.weight"):
                data = permute(data, config.num_attention_heads, config.num_key_value_heads)
            if data.ndim == 1:  # norms stay f32, as llama.cpp writes them
                writer.add_tensor(name, data.astype(np.float32))
            elif quant == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
                quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
                writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                writer.add_tensor(name, data.astype(np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return Path(out)


def _add_tokenizer(writer, tokenizer, vocab_size: int, pre_tokenizer: str, model_dir: Path) -> None:
    """Byte-level BPE vocabulary in id order (padded to the model's vocab size), merges, special ids, template."""
    import gguf

    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids)
    added = set(tokenizer.added_tokens_decoder)
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[index])
        if index in special or (index in added and tokenizer.added_tokens_decoder[index].special):
            types.append(gguf.TokenType.CONTROL)
        elif index in added:
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special_vocab = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    if not special_vocab.merges:
        raise UserError(f"GGUF export: {model_dir} has no BPE merges (a byte-level BPE tokenizer.json is needed)")
    special_vocab.special_token_ids["pad"] = tokenizer.pad_token_id
    if not special_vocab.chat_template and tokenizer.chat_template:
        special_vocab.chat_template = tokenizer.chat_template  # transformers 5 keeps it in chat_template.jinja
    special_vocab.add_to_gguf(writer)
