"""SFT data: loading (alpaca, sharegpt, messages, prompt/completion), chat templating, label masking, packing.

Public API:
- `load_conversations(source, *, format="auto", max_samples=None) -> list[list[dict]]`
- `encode_conversation(tokenizer, messages, *, cutoff_len=None) -> {"input_ids", "labels"}`
- `encode_prompt(tokenizer, messages) -> list[int]`
- `encode_dataset(tokenizer, conversations, *, cutoff_len=None) -> list[example]`
- `pack_examples(examples, max_length)`, `CausalLMCollator(pad_token_id)`
"""

from eaft.data.dataset import encode_dataset
from eaft.data.encode import IGNORE_INDEX, count_labels, encode_conversation, encode_prompt, render
from eaft.data.formats import FORMATS, DataError
from eaft.data.load import load_conversations
from eaft.data.packing import CausalLMCollator, pack_examples

__all__ = [
    "FORMATS",
    "IGNORE_INDEX",
    "CausalLMCollator",
    "DataError",
    "count_labels",
    "encode_conversation",
    "encode_dataset",
    "encode_prompt",
    "load_conversations",
    "pack_examples",
    "render",
]
