"""`eaft analyze` with the real embedded SmolLM2-135M-Instruct on a few rows of the package's domain data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eaft.analysis import AnalyzeConfig, run_analysis
from eaft.analysis.outputs import read_table
from eaft.data import encode_conversation, load_conversations

DATA = Path(__file__).resolve().parents[2] / "src" / "eaft" / "resources" / "house_calc.jsonl"


@pytest.mark.slow
def test_smollm2_end_to_end_on_domain_rows(tmp_path):
    from eaft.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(None)  # what `eaft analyze` loads without --model
    config = AnalyzeConfig(
        data=str(DATA), max_samples=4, rollouts=1, max_new_tokens=4, out=str(tmp_path), progress=False
    )
    summary = run_analysis(config, model, tokenizer)
    cols = read_table(tmp_path / "tokens.parquet")
    samples = [encode_conversation(tokenizer, c) for c in load_conversations(str(DATA), max_samples=4)]
    assert len(cols["prob"]) == sum(sum(1 for y in s["labels"] if y != -100) for s in samples)
    assert sum(summary["data"]["quadrant_shares"].values()) == pytest.approx(1.0)
    assert 0 < summary["rollouts"]["tokens"] <= 4 * 4
    # the first sample against full logits of the real model
    ids = torch.tensor([samples[0]["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    pos = cols["position"][cols["sample"] == 0]
    ref = logp[pos - 1, ids[0, pos]].exp().numpy()
    np.testing.assert_allclose(cols["prob"][cols["sample"] == 0], ref, rtol=1e-4, atol=1e-6)
    report = (tmp_path / "report.md").read_text()
    assert "| **confident-conflict share** |" in report and summary["config"]["data_fingerprint"]
