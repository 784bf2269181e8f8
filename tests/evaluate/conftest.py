"""A tiny random Llama and a byte-level BPE tokenizer built here (no downloads), saved as an HF folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

#: A few rows of each benchmark, written for the tests, in the data root's layout (the real files: `real_data_root`).
FIXTURE_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "Question: Which statement best explains why photosynthesis is the foundation of most food webs? Answer:",
    "The sum of 12 and 30 is 42. #### 42. The answer is \\boxed{7}.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 1,000 -5 3.5",
    "Sarah was a much better surgeon than Maria so Sarah always got the easier cases.",
    "Write a short poem. Answer in lowercase letters only. Do not use any commas.",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    specials = ["<|end|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(CORPUS * 3, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|end|>", pad_token="<|pad|>", chat_template=CHAT_TEMPLATE
    )


def build_model(vocab_size: int, seed: int = 0):
    import torch

    from tests.train.tiny import build_model as tiny_model

    ids = {"eos_token_id": 0, "pad_token_id": 1, "bos_token_id": None}
    model = tiny_model(vocab_size=vocab_size, seed=seed, max_position_embeddings=1024, **ids)
    # Larger output weights make the random model's next-token choice decisive (no near-ties in greedy decoding).
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer()
    assert tokenizer.convert_tokens_to_ids("<|end|>") == 0 and tokenizer.pad_token_id == 1
    build_model(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny(tiny_model_dir):
    """(model, tokenizer) loaded the way `eaft eval` loads them."""
    from eaft.models import load_model_and_tokenizer

    return load_model_and_tokenizer(str(tiny_model_dir))


@pytest.fixture(autouse=True)
def isolated_cache(request, tmp_path, monkeypatch):
    """Fast tests keep every cache (results, file hashes, nltk data) in their own folder, and run torch on one
    thread: on a busy 2-core machine the tiny model's matmuls are dominated by thread hand-offs otherwise."""
    import torch

    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    monkeypatch.setenv("EAFT_CACHE", str(tmp_path / "eaft-cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def fixture_rows(relative: str, n: int) -> list[dict]:
    """The first `n` rows of a fixture file under tests/fixtures/data."""
    with (FIXTURE_DATA / relative).open(encoding="utf-8") as handle:
        return [json.loads(next(handle)) for _ in range(n)]
