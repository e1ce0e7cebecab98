"""The fast tiny-model configuration shared by the loop, tracking and stage-0 reuse tests: a random 2-layer
model, SFT, two short tasks, small eval subsets, no general suite."""

FAST = [
    "model=tiny",
    "method=sft",
    "suite=none",
    "stream.name=pair",
    "stream.tasks=[tooluse,dates]",
    "trainer.max_steps=3",
    "trainer.batch_size=4",
    "trainer.warmup_steps=1",
    "trainer.max_train_items=12",
    "eval.limit=3",
    "eval.batch_size=4",
    "eval.max_gen_toks=8",
    "eval.in_context_items=0",
]


# the same with one task (the fault, remote-tracking and cluster-sweep tests)
FAST_ONE_TASK = [
    {"stream.name=pair": "stream.name=one", "stream.tasks=[tooluse,dates]": "stream.tasks=[tooluse]"}.get(
        o, o
    )
    for o in FAST
]
