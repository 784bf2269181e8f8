"""Tiny offline fixtures: a byte-level BPE tokenizer trained in-process with a chat template, and random models."""

from __future__ import annotations

import functools

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: SmolLM2-135M-Instruct's own chat template (ChatML without generation markers), for tiny stand-ins of the embedded
#: default; tests/integrations/test_readme_trl.py checks it against the real tokenizer.
SMOLLM2_CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Llama-3 style: a BOS in the text, an end-of-turn marker with no trailing newline.
LLAMA3 = (
    "{{ '<|begin|>' }}{% for message in messages %}"
    "{{ '<|header|>' + message['role'] + '<|end_header|>\n\n' + message['content'] + '<|eot|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|header|>assistant<|end_header|>\n\n' }}{% endif %}"
)
SPECIAL = ["<pad>", "<|im_start|>", "<|im_end|>", "<|begin|>", "<|header|>", "<|end_header|>", "<|eot|>"]
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "what is two plus three? the answer is five.",
    "system user assistant tool answer question",
    "Answer: 42. Unit: cm. Result => ok",
    "hello world, how are you today? fine thanks",
] * 20


@functools.cache
def _trained_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok.to_str()


def build_tokenizer(template: str = CHATML):
    """A fresh PreTrainedTokenizerFast (about 360 tokens) with `template` as its chat template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    eos = "<|im_end|>" if template in (CHATML, SMOLLM2_CHATML) else "<|eot|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json()), eos_token=eos, pad_token="<pad>"
    )
    tokenizer.chat_template = template
    return tokenizer


def build_model(
    kind: str = "llama", vocab_size: int = 360, seed: int = 0, hidden: int = 32, tied: bool = False, **config
):
    """A tiny random causal LM (llama or qwen2) built from a config; `tied` shares lm_head with the embedding;
    `config` overrides other config fields (token ids, max_position_embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tied,
    )
    common.update(config)
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    return LlamaForCausalLM(LlamaConfig(**common))


def save_tiny(path, kind: str = "llama", template: str = CHATML) -> str:
    """A tiny model + tokenizer saved as a local HF folder, loadable by `eaft train model=<path>`."""
    tokenizer = build_tokenizer(template)
    build_model(kind, vocab_size=len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def write_rows(path, count: int = 40) -> str:
    """A small chat data set (messages format) written as JSONL."""
    import json

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"what is {i} plus {i}?"},
                {"role": "assistant", "content": f"Answer: {2 * i}. Result => ok"},
            ]
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def write_tiny_suite(folder, items: int = 3, extra: bool = False):
    """A suite of two multiple-choice tasks (target and general; `extra`: a third in the extra group) over `items`
    rows written beside it."""
    import json

    import yaml

    rows = [{"question": f"{i} plus {i}?", "choices": ["five", "ok", "dog"], "answer": i % 3} for i in range(items)]
    (folder / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    suite = {
        "name": "tiny",
        "target": [{"name": "mc_target", "type": "multiple_choice", "path": "mc.jsonl", "prompt": "Q: {question}\nA:"}],
        "general": [{"name": "mc_general", "type": "multiple_choice", "path": "mc.jsonl", "scoring": "raw"}],
    }
    if extra:
        suite["extra"] = [{"name": "mc_extra", "type": "multiple_choice", "path": "mc.jsonl", "scoring": "per_token"}]
    (folder / "suite.yaml").write_text(yaml.safe_dump(suite), encoding="utf-8")
    return folder / "suite.yaml"
