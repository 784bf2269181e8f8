"""EaftSFTTrainer: TRL's SFTTrainer on eaft's loss path trains exactly as eaft's own trainer does, on TRL's labels."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from eaft.data import CausalLMCollator, encode_conversation  # noqa: E402
from eaft.integrations.trl import EaftSFTTrainer  # noqa: E402
from eaft.loss import ObjectiveLoss, Reference  # noqa: E402
from eaft.objectives import build_objective  # noqa: E402
from eaft.train.cli import parse_args  # noqa: E402
from eaft.train.outputs import read_metrics  # noqa: E402
from eaft.train.run import run_training  # noqa: E402
from eaft.train.trainer import ObjectiveTrainer  # noqa: E402
from tests.train.tiny import build_model, build_tokenizer  # noqa: E402

#: Per-step loss and final parameters, fp32 on CPU: the two trainers run the same arithmetic.
TOL = 1e-5
#: tests/train/tiny.py's ChatML, with the assistant's content and end-of-turn marker inside {% generation %}: TRL's
#: assistant_only_loss mask is then exactly eaft's (every assistant turn and the marker after it).
CHATML_GENERATION = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: The settings both trainers share; `sequential` sampling makes the batch order the data order in both.
SHARED = dict(
    max_steps=3,
    per_device_train_batch_size=2,
    gradient_accumulation_steps=2,
    learning_rate=1e-3,
    lr_scheduler_type="linear",
    logging_steps=1,
    seed=0,
    train_sampling_strategy="sequential",
    report_to="none",
    disable_tqdm=True,
)


@pytest.fixture(autouse=True)
def offline_one_thread(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny") / "llama"
    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHATML_GENERATION
    build_model("llama", vocab_size=len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def conversations(count: int = 12) -> list[list[dict]]:
    return [
        [
            {"role": "user", "content": f"what is {i} plus {i}?"},
            {"role": "assistant", "content": f"Answer: {2 * i}." + " Result => ok" * (i % 3)},
        ]
        for i in range(count)
    ]


def sft_config(tmp_path, name: str, **overrides) -> SFTConfig:
    settings = {**SHARED, "bf16": False, "gradient_checkpointing": False, "save_strategy": "no", **overrides}
    return SFTConfig(output_dir=str(tmp_path / name), **settings)


def losses(log_history: list[dict]) -> list[float]:
    return [row["loss"] for row in log_history if "loss" in row]


def assert_same_parameters(ours: dict, theirs: dict) -> float:
    assert ours.keys() == theirs.keys()
    worst = max(float((ours[k].float() - theirs[k].float()).abs().max()) for k in ours)
    assert worst <= TOL
    return worst


def test_messages_with_assistant_only_loss_train_as_eaft_train_does(tmp_path, model_dir):
    """TRL's tokenization and assistant mask, eaft's objective: per-step loss and weights equal `eaft train`'s."""
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations()), encoding="utf-8")
    overrides = [f"{k}={v}" for k, v in SHARED.items()]
    argv = [f"model={model_dir}", f"dataset={data}", "finetuning=full", "objective=eaft", "save_steps=100", *overrides]
    run_dir = run_training(parse_args([*argv, f"output_dir={tmp_path / 'eaft'}"]))
    eaft_losses = [row["loss"] for row in read_metrics(run_dir) if "loss" in row]

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = EaftSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=sft_config(tmp_path, "trl", assistant_only_loss=True),
        train_dataset=Dataset.from_list([{"messages": c} for c in conversations()]),
        processing_class=tokenizer,
        objective="eaft",
    )
    # TRL masks exactly the tokens eaft masks: the objective sees the same labels.
    ours = [encode_conversation(tokenizer, c) for c in conversations()]
    assert [row["input_ids"] for row in trainer.train_dataset] == [e["input_ids"] for e in ours]
    assert [row["labels"] for row in trainer.train_dataset] == [e["labels"] for e in ours]
    trainer.train()

    trl_losses = losses(trainer.state.log_history)
    assert len(trl_losses) == len(eaft_losses) == 3
    assert max(abs(a - b) for a, b in zip(trl_losses, eaft_losses, strict=True)) <= TOL
    saved = AutoModelForCausalLM.from_pretrained(run_dir / "model").state_dict()
    initial = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    final = trainer.model.state_dict()
    assert_same_parameters(final, saved)
    assert any(not torch.equal(final[k], initial[k]) for k in final)


def eaft_trainer_on_rows(tmp_path, model_dir, rows, objective, fused_loss) -> ObjectiveTrainer:
    """eaft's own trainer on the rows TRL prepared (input_ids, labels), in the same order, with the same settings."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    objective = build_objective(objective)
    reference = Reference(model, lora=False) if objective.needs_reference else None
    args = TrainingArguments(
        output_dir=str(tmp_path / "eaft"), save_strategy="no", remove_unused_columns=False, **SHARED
    )
    return ObjectiveTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=CausalLMCollator(AutoTokenizer.from_pretrained(model_dir).pad_token_id),
        loss_module=ObjectiveLoss.for_model(model, objective, fused_loss=fused_loss, reference=reference),
    )


@pytest.mark.parametrize(("objective", "fused_loss"), [("eaft", "false"), ("asft", "true")])
def test_prompt_completion_with_completion_only_loss_trains_as_objective_trainer_does(
    tmp_path, model_dir, objective, fused_loss
):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [
        {"prompt": f"what is {i} plus {i}?", "completion": f" Answer: {2 * i}." + " ok" * (i % 3)} for i in range(12)
    ]
    trainer = EaftSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=sft_config(tmp_path, "trl"),  # completion_only_loss defaults to true on prompt/completion rows
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        objective=objective,
        fused_loss=fused_loss,
    )
    prepared = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in trainer.train_dataset]
    for row, example in zip(rows, prepared, strict=True):
        prompt_len = len(tokenizer(row["prompt"])["input_ids"])
        assert all(label == -100 for label in example["labels"][:prompt_len])
        assert example["labels"][prompt_len:] == example["input_ids"][prompt_len:]  # the completion and its EOS
    trainer.train()
    reference = eaft_trainer_on_rows(tmp_path, model_dir, prepared, objective, fused_loss)
    reference.train()
    assert trainer.loss_module.fused == reference.loss_module.fused == (fused_loss == "true")
    trl_losses, eaft_losses = losses(trainer.state.log_history), losses(reference.state.log_history)
    assert len(trl_losses) == 3
    assert max(abs(a - b) for a, b in zip(trl_losses, eaft_losses, strict=True)) <= TOL
    assert_same_parameters(trainer.model.state_dict(), reference.model.state_dict())


def first_step_loss(tmp_path, model_dir, name, **overrides) -> tuple[float, EaftSFTTrainer]:
    rows = [
        {"prompt": f"what is {i} plus {i}?", "completion": f" Answer: {2 * i}." + " ok" * (i % 3)} for i in range(12)
    ]
    config = sft_config(tmp_path, name, **{"max_steps": 2, "gradient_accumulation_steps": 1, **overrides})
    trainer = EaftSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        objective="eaft",
    )
    trainer.train()
    return losses(trainer.state.log_history)[0], trainer


def test_packing_runs_and_its_first_loss_equals_the_unpacked_one(tmp_path, model_dir):
    """All 12 rows in one batch: packed (TRL's bfd, padding-free) or not, step 1 scores the same tokens."""
    packed, trainer = first_step_loss(
        tmp_path, model_dir, "packed", packing=True, max_length=64, per_device_train_batch_size=16
    )
    assert trainer.padding_free and trainer.state.global_step == 2
    assert len(trainer.train_dataset) < 12  # rows were packed together
    unpacked, _ = first_step_loss(tmp_path, model_dir, "unpacked", per_device_train_batch_size=16)
    assert abs(packed - unpacked) <= TOL


def test_lora_through_peft_config_trains_the_adapters_with_asft(tmp_path, model_dir):
    from peft import LoraConfig

    rows = [{"prompt": f"what is {i} plus {i}?", "completion": f" Answer: {2 * i}."} for i in range(8)]
    trainer = EaftSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=sft_config(tmp_path, "lora", learning_rate=1e-2),
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        objective="asft",
        objective_args={"alpha": 0.5},
    )
    assert trainer.loss_module.reference.lora  # the reference is the model with its adapters disabled
    trainer.train()
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # LoRA B starts at zero: the adapters trained
    frozen = [p for n, p in trainer.model.named_parameters() if "lora_" not in n]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert len(losses(trainer.state.log_history)) == 3


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"use_liger_kernel": True}, "use_liger_kernel=True: Liger's fused linear cross-entropy"),
        ({"loss_type": "dft"}, "loss_type='dft' selects TRL's own loss.*objective='dft'"),
        ({"label_smoothing_factor": 0.1}, "label_smoothing_factor=0.1"),
    ],
)
def test_settings_that_would_drop_the_objective_are_refused_by_name(tmp_path, model_dir, setting, message):
    config = sft_config(tmp_path, "refused")
    for key, value in setting.items():
        setattr(config, key, value)
    with pytest.raises(ValueError, match=message):
        EaftSFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_dir),
            args=config,
            train_dataset=Dataset.from_list([{"prompt": "a", "completion": " b"}]),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
        )
    with pytest.raises(ValueError, match="compute_loss_func would replace objective 'eaft'"):
        EaftSFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_dir),
            args=sft_config(tmp_path, "refused"),
            train_dataset=Dataset.from_list([{"prompt": "a", "completion": " b"}]),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
            compute_loss_func=lambda outputs, labels, num_items_in_batch=None: outputs.loss,
        )


@pytest.mark.parametrize("fused_loss", ["true", "false"])
def test_logs_hold_trl_metrics_as_trl_computes_them_and_eafts_statistics(tmp_path, model_dir, fused_loss):
    """objective='sft' through eaft is TRL's NLL: loss, entropy, accuracy and token count equal plain SFTTrainer's."""
    rows = [{"prompt": f"what is {i} plus {i}?", "completion": f" Answer: {2 * i}."} for i in range(8)]

    def run(cls, **extra):
        trainer = cls(
            model=AutoModelForCausalLM.from_pretrained(model_dir),
            args=sft_config(tmp_path, cls.__name__, max_steps=2, gradient_accumulation_steps=1),
            train_dataset=Dataset.from_list(rows),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
            **extra,
        )
        trainer.train()
        return [row for row in trainer.state.log_history if "loss" in row]

    ours, theirs = run(EaftSFTTrainer, objective="sft", fused_loss=fused_loss), run(SFTTrainer)
    for mine, trl_row in zip(ours, theirs, strict=True):
        for key in ("loss", "entropy", "mean_token_accuracy", "num_tokens", "grad_norm"):
            assert mine[key] == pytest.approx(trl_row[key], rel=1e-5, abs=1e-6), key
        for key in ("ce", "mean_entropy", "mean_weight", "conflict_share", "label_tokens"):
            assert key in mine and key not in trl_row
        assert mine["ce"] == pytest.approx(mine["loss"], rel=1e-5) and mine["mean_weight"] == 1.0


def test_flow_weights_come_from_the_initial_model_and_ride_in_the_batch(tmp_path, model_dir):
    rows = [{"prompt": f"what is {i} plus {i}?", "completion": f" Answer: {2 * i}."} for i in range(8)]
    trainer = EaftSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=sft_config(tmp_path, "flow"),
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        objective="flow",
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    weights, labels = batch["static_weights"], batch["labels"]
    assert weights.shape == labels.shape  # aligned with the labels, before the shift, as eaft's batches carry them
    assert torch.all((weights[:, 1:] > 0) == (labels[:, 1:] != -100)) and torch.all(weights[:, 0] == 0)
    assert torch.all(weights <= 1.0)  # exp(−L₀/τ)
    trainer.train()
    assert len(losses(trainer.state.log_history)) == 3


def test_objective_args_need_a_name_and_flow_refuses_packing(tmp_path, model_dir):
    data = Dataset.from_list([{"prompt": "a", "completion": " b"}] * 4)
    common = dict(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    with pytest.raises(ValueError, match="objective_args go with an objective name"):
        EaftSFTTrainer(
            args=sft_config(tmp_path, "a"), objective=build_objective("eaft"), objective_args={"k": 5}, **common
        )
    with pytest.raises(ValueError, match="flow.*without packing"):
        EaftSFTTrainer(args=sft_config(tmp_path, "b", packing=True, max_length=16), objective="flow", **common)
