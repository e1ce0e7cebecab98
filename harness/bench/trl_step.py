"""TRL's SDFTTrainer on the step benchmark's fixed batch (harness.bench.step): the same prompts,
demonstrations, template, rollout length and optimizer settings as our SDFT, timed per optimizer step."""

from __future__ import annotations

import copy
import os
import tempfile
import time
from typing import Any

import torch

from harness.bench.fixed_batch import DEMOS, PROMPTS, TEMPLATE
from harness.bench.measure import PeakMemory
from harness.tasks.spec import TEACHER_TEMPLATES


def run_trl(
    base_model,
    tok,
    steps: int,
    new_tokens: int,
    device,
    compute: torch.dtype = torch.float32,
    rollouts: int = 1,
) -> dict[str, Any]:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.sdft import SDFTTrainer

    # our paper template, with TRL's {privileged_context} standing for the demonstration (no passage here)
    template = (
        TEACHER_TEMPLATES[TEMPLATE]
        .replace("{privileged}", "")
        .replace("{demonstration}", "{privileged_context}")
    )
    data = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": p}], "privileged_context": d}
            for p, d in zip(PROMPTS, DEMOS, strict=True)
        ]
    )
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    model = copy.deepcopy(base_model)
    with tempfile.TemporaryDirectory() as out, PeakMemory(device) as mem:
        args = _trl_config(out, steps, new_tokens, device, compute, rollouts, template)
        trainer = SDFTTrainer(
            model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[Timer()]
        )
        trainer.train()
        del trainer
    del model
    return {"steps": [{"step_s": t} for t in times], "peak_mib": mem.mib}


def _trl_config(
    out: str, steps: int, new_tokens: int, device: Any, compute: torch.dtype, rollouts: int, template: str
) -> Any:
    """TRL's SDFTConfig set to what our SDFT step does (see harness.bench.step's module docstring)."""
    from trl.experimental.sdft import SDFTConfig

    return SDFTConfig(
        # TRL counts its batch in completions: 8 prompts x `rollouts` generations each
        output_dir=out,
        per_device_train_batch_size=8 * rollouts,
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=1e-5,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        num_generations=rollouts,
        max_completion_length=new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        generation_kwargs={"min_new_tokens": new_tokens},
        teacher_model_kind="ema",
        teacher_update_rate=0.01,
        distillation_mode="full_logits",
        distillation_alpha=0.0,
        num_loss_tokens_to_skip=3,
        distillation_is_clip=None,
        teacher_prompt_template=template,
        gradient_checkpointing=False,
        bf16=compute == torch.bfloat16,
        fp16=False,
        use_cpu=device.type == "cpu",
        report_to=[],
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
