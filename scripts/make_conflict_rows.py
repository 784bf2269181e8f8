"""Write configs/experiments/data/regimes/conflict_<first>-<last>.jsonl: rows that contradict what the base model
confidently predicts, for the regime map (issue 24). Deterministic: the same command rewrites the same files.

Each row is a prompt of scripts/conflict_prompts.py answered by the embedded SmolLM2-135M-Instruct itself,
greedily, except that at positions where the model is confident (normalized top-20 entropy H̃ < 0.1, top token
p ≥ 0.5, the top token a whole content word) the answer takes, with chance 0.9, a whole content word the model
ranks 5th to 20th instead (p < 0.05, same capitalization): a plausible but improbable word. Greedy decoding then
goes on from the changed prefix, so each changed token is a confident conflict under exactly the prefix training
will see, and the rest of the answer stays the model's own. An answer cut at MAX_NEW_TOKENS keeps its whole
sentences. Every row is checked afterwards on its own (unbatched, as `eaft train` encodes it): its answer must
re-tokenize to the generated tokens; it is kept only if at least MIN_CONFLICTS changed tokens are confident
conflicts at the fixed thresholds (H̃ < 0.2, p < 0.1) and those conflicts carry at least MIN_ROW_SHARE of the
row's SFT gradient norm (|softmax − onehot| summed over its label tokens, as `eaft analyze` measures it). The
kept rows, in one seeded order, are written in ranges (alpaca: instruction, output), so that a level of N rows
is the first N; conflict_rows.stats.json gives each file's counts and the first 20 rows with every changed token,
its p and H̃. Run from the repository root (on one thread, so that its sums do not depend on the thread count):

    python scripts/make_conflict_rows.py     # all 2,382 prompts; about an hour on one thread of a busy 2-core machine
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
from pathlib import Path

import torch

from eaft.data import encode_conversation, encode_prompt
from eaft.io import write_json_atomic, write_text_atomic
from eaft.models import load_model_and_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conflict_prompts import build_prompts  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "data" / "regimes"
#: The files written: ranges of the kept rows, in their seeded order (1-based, inclusive).
RANGES = ("1-100", "1-400", "401-800", "801-1200")
TOP_K = 20  # the entropy EAFT reads: softmax over the top 20 logits, divided by ln 20
MAX_ENTROPY = 0.1  # a position is confident below this H̃ ...
MIN_TOP_PROB = 0.5  # ... and with its top token at least this likely
RANKS = (5, 20)  # the replacement: a whole word the model ranks in this range (1 = its top token) ...
MAX_REPLACEMENT_PROB = 0.05  # ... and finds at most this likely
REPLACE_RATE = 0.9  # chance that an eligible position is changed
MAX_CONFLICTS = 12  # changed tokens per row at most
MIN_GAP = 1  # tokens between two changes at least
MIN_CONFLICTS = 2  # kept rows carry at least this many verified conflicts ...
MIN_ROW_SHARE = 0.3  # ... and at least this share of their SFT gradient norm on fixed-threshold conflicts
MAX_NEW_TOKENS = 72
FIXED_ENTROPY, FIXED_PROB = 0.2, 0.1  # the fixed confident-conflict thresholds of training logs and analyze
WORD = re.compile(r"^ [A-Za-z]{2,}$")
#: Function words are never changed nor used as replacements: the conflicts fall on content words.
STOPWORDS = frozenset(
    "a an the is are was were be been being am of to in on at by for from with and or but not no as that this these "
    "those it its it's he she they them their there here his her we our you your i me my do does did has have had "
    "can could will would shall should may might must also very so than then which who whom whose what when where "
    "why how all any each some such into onto over under about after before up down out off one".split()
)
SENTENCE_END = (".", "!", "?")


def entropy_and_top(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(H̃ top-k, probabilities, top-k ids, top-k probabilities) of fp32 logits. Shape: [B, V] -> [B], [B, V], ..."""
    probs = torch.softmax(logits, dim=-1)
    top = torch.topk(logits, TOP_K, dim=-1)
    logq = torch.log_softmax(top.values, dim=-1)
    entropy = -(logq.exp() * logq).sum(-1) / math.log(TOP_K)
    return entropy, probs, top.indices, probs.gather(-1, top.indices)


def choose_token(words: dict[int, str], entropy: float, top_ids: list[int], top_probs: list[float], rng) -> int | None:
    """A replacement for the top token at a confident position, or None to keep it."""
    first = words.get(top_ids[0])
    if first is None or entropy >= MAX_ENTROPY or top_probs[0] < MIN_TOP_PROB or rng.random() >= REPLACE_RATE:
        return None
    candidates = [
        token
        for token, p in zip(top_ids[RANKS[0] - 1 : RANKS[1]], top_probs[RANKS[0] - 1 : RANKS[1]], strict=True)
        if token in words
        and p < MAX_REPLACEMENT_PROB
        and words[token][1].isupper() == first[1].isupper()
        and words[token].lower() != first.lower()
    ]
    return rng.choice(candidates) if candidates else None


@torch.inference_mode()
def generate_batch(model, prompts: list[list[int]], rngs: list, words: dict[int, str], eos: int, pad: int) -> list:
    """Greedy answers with confident positions changed. Returns per row (token ids, changed positions, finished)."""
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    answers = [[] for _ in prompts]
    changed = [[] for _ in prompts]
    done = [False] * len(prompts)
    for _ in range(MAX_NEW_TOKENS):
        entropy, _, top_ids, top_probs = entropy_and_top(out.logits[:, -1].float())
        step = []
        for row, rng in enumerate(rngs):
            token = pad
            if not done[row]:
                ids_row, probs_row = top_ids[row].tolist(), top_probs[row].tolist()
                token = ids_row[0]
                recent = changed[row] and len(answers[row]) - changed[row][-1] <= MIN_GAP
                if len(changed[row]) < MAX_CONFLICTS and not recent:
                    replacement = choose_token(words, float(entropy[row]), ids_row, probs_row, rng)
                    if replacement is not None:
                        token = replacement
                        changed[row].append(len(answers[row]))
                answers[row].append(token)
                done[row] = token == eos
            step.append(token)
        if all(done):
            break
        mask = torch.cat([mask, torch.ones(len(prompts), 1, dtype=mask.dtype)], dim=1)
        positions = positions[:, -1:] + 1
        out = model(
            input_ids=torch.tensor(step)[:, None],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    return [(a[:-1] if d else a, c, d) for a, c, d in zip(answers, changed, done, strict=True)]


def whole_sentences(tokenizer, answer: list[int], changed: list[int], finished: bool) -> list[int] | None:
    """The answer, or for one cut at MAX_NEW_TOKENS its tokens up to the last sentence end after its last change."""
    if finished:
        return answer
    for end in range(len(answer), (changed[-1] if changed else 0), -1):
        if tokenizer.decode(answer[end - 1 : end]).rstrip().endswith(SENTENCE_END):
            return answer[:end]
    return None


@torch.inference_mode()
def verify_row(model, tokenizer, prompt: str, answer_ids: list[int], changed: list[int]) -> dict | None:
    """The row as training encodes it, with p and H̃ of each changed token; None if it does not re-tokenize."""
    text = tokenizer.decode(answer_ids)
    if text != text.strip():
        return None
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}]
    encoded = encode_conversation(tokenizer, messages)
    label_positions = [j for j, label in enumerate(encoded["labels"]) if label != -100]
    if [encoded["input_ids"][j] for j in label_positions[:-1]] != answer_ids:
        return None
    logits = model(input_ids=torch.tensor([encoded["input_ids"]])).logits[0].float()
    positions = torch.tensor(label_positions)
    targets = torch.tensor([encoded["input_ids"][j] for j in label_positions])
    entropy, probs, top_ids, _ = entropy_and_top(logits[positions - 1])
    target_prob = probs.gather(-1, targets[:, None])[:, 0]
    # SFT's gradient norm w.r.t. the logits, |softmax - onehot|, as eaft analyze measures it
    grad = (probs.square().sum(-1) - 2 * target_prob + 1).clamp(min=0).sqrt()
    in_conflict = (entropy < FIXED_ENTROPY) & (target_prob < FIXED_PROB)
    marks = [
        {
            "position": k,
            "token": tokenizer.decode([answer_ids[k]]),
            "instead_of": tokenizer.decode([int(top_ids[k, 0])]),
            "prob": round(float(target_prob[k]), 6),
            "entropy_topk": round(float(entropy[k]), 6),
        }
        for k in changed
    ]
    return {
        "instruction": prompt,
        "output": text,
        "label_tokens": len(label_positions),
        "changed": marks,
        "conflicts": int(in_conflict[changed].sum()) if changed else 0,
        "row_share": round(float(grad[in_conflict].sum() / grad.sum()), 4),
    }


def word_tokens(tokenizer) -> dict[int, str]:
    """Token id -> text for the whole content-word tokens (a space then 2+ ASCII letters, not a function word)."""
    words = {}
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if WORD.match(text) and text[1:].lower() not in STOPWORDS:
            words[token_id] = text
    return words


def build_rows(seed: int, batch: int, limit: int | None = None) -> list[dict]:
    torch.set_num_threads(1)  # sums independent of the thread count; and no waits for a second thread on a busy machine
    model, tokenizer = load_model_and_tokenizer("default")
    model.eval()
    words = word_tokens(tokenizer)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompts = build_prompts(seed)[:limit]
    rows = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        ids = [encode_prompt(tokenizer, [{"role": "user", "content": p}, {"role": "assistant", "content": ""}])
               for _, p in chunk]  # fmt: skip
        rngs = [random.Random(f"{seed}:{start + i}") for i in range(len(chunk))]
        for (category, prompt), (answer, changed, finished) in zip(
            chunk, generate_batch(model, ids, rngs, words, eos, tokenizer.pad_token_id), strict=True
        ):
            answer = whole_sentences(tokenizer, answer, changed, finished)
            row = verify_row(model, tokenizer, prompt, answer, changed) if answer else None
            if row is not None and row["conflicts"] >= MIN_CONFLICTS and row["row_share"] >= MIN_ROW_SHARE:
                rows.append({"category": category, **row})
        print(f"{min(start + batch, len(prompts))}/{len(prompts)} prompts, {len(rows)} rows kept", flush=True)
    return rows


def parse_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    if not (first.isdigit() and last.isdigit() and 1 <= int(first) <= int(last)):
        raise argparse.ArgumentTypeError(f"expected a range such as 401-800, got {text!r}")
    return int(first), int(last)


def summary(rows: list[dict]) -> dict:
    return {
        "rows": len(rows),
        "label_tokens": sum(r["label_tokens"] for r in rows),
        "changed_tokens": sum(len(r["changed"]) for r in rows),
        "verified_conflicts": sum(r["conflicts"] for r in rows),
        "categories": {c: sum(r["category"] == c for r in rows) for c in sorted({r["category"] for r in rows})},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ranges", nargs="+", default=list(RANGES), help="files to write: ranges of kept rows")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--limit", type=int, help="use the first N prompts only (to try settings)")
    args = parser.parse_args()
    ranges = [parse_range(r) for r in args.ranges]
    rows = build_rows(args.seed, args.batch, args.limit)
    if len(rows) < max(last for _, last in ranges):
        kept = Path("runs") / "conflict_rows.kept.json"  # the hours of work are not lost: inspect, then raise --limit
        write_json_atomic(kept, rows)
        raise SystemExit(f"only {len(rows)} rows kept, fewer than the ranges ask ({args.ranges}); all kept in {kept}")
    files = {}
    for first, last in ranges:
        chosen = rows[first - 1 : last]
        lines = [json.dumps({"instruction": r["instruction"], "output": r["output"]}, ensure_ascii=False)
                 for r in chosen]  # fmt: skip
        name = f"conflict_{first}-{last}.jsonl"
        write_text_atomic(args.out / name, "\n".join(lines) + "\n")
        files[name] = summary(chosen)
    used = rows[: max(last for _, last in ranges)]
    write_json_atomic(
        args.out / "conflict_rows.stats.json",
        {
            "command": "python scripts/make_conflict_rows.py " + " ".join(sys.argv[1:]),
            "rows_kept": len(rows),
            "all_written": summary(used),
            "files": files,
            "first_rows": used[:20],  # each with its changed tokens, their p and H̃, and its row_share
        },
    )
    print(f"wrote {', '.join(files)} and conflict_rows.stats.json to {args.out}")


if __name__ == "__main__":
    main()
