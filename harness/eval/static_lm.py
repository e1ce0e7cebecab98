"""lm-eval's HF model class with greedy `generate_until` on the static-cache decoder (harness.decoding).

Only HFLM's `_model_generate` is replaced, and only for greedy requests: loglikelihood requests, and any
task that samples, stay on lm-eval's own path. The returned tensor has `generate`'s layout (context, then
the new tokens), so lm-eval decodes and cuts at `until` as it does for its own generations.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from harness.decoding.static import decode
from harness.decoding.warpers import StopStrings, declared_eos


def _greedy(kwargs: dict[str, Any]) -> bool:
    """lm-eval's own rule: greedy when do_sample is false, or unset with temperature 0 (its default)."""
    do_sample = kwargs.get("do_sample")
    return do_sample is False or (do_sample is None and float(kwargs.get("temperature", 0.0)) == 0.0)


@functools.cache
def static_hflm_class() -> type:
    """The subclass, built on first use: importing lm-eval's HF model takes seconds."""
    from lm_eval.models.huggingface import HFLM

    class StaticHFLM(HFLM):
        def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
            if not _greedy(generation_kwargs):
                return super()._model_generate(context, max_length, stop, **generation_kwargs)
            mask = generation_kwargs.get("attention_mask")
            mask = torch.ones_like(context) if mask is None else mask
            new = decode(
                self.model,
                context,
                mask,
                max_new_tokens=max_length - context.shape[1],
                eos=declared_eos(self.model, self.tokenizer),
                pad_id=self.tokenizer.pad_token_id,
                stop_strings=StopStrings(self.tokenizer, stop),
            )
            return torch.cat([context, new.to(context.device)], dim=1)

    return StaticHFLM
