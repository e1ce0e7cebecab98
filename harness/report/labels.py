"""Readable names for the report's groups: "SDFT + SFT anchor" rather than "sdft (method.distill.sft_weight=1.0)".

A group's label is, first that applies:
1. the user's, from `report.labels`, keyed by the group's override string (`sdft (method.distill.sft_weight=1.0)`,
   the `overrides` column of runs.csv and summary.csv) or by the method's name (`sdft`);
2. the method's `label:` (its YAML, or `method.label=...`), stored with the run;
3. the method's display name built from the run's settings, by the `display` function the caller passes
   (the CLI passes `harness.methods.display_name`: the report itself imports no training code); without
   one, the method's name in capitals.
Groups of one stream that would share a label get the knobs that tell them apart, in short form:
"SFT (lr=0.0001)" and "SFT (lr=0.0002)". The override string stays in the CSVs for machines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from harness.report.runs import Group

Display = Callable[[Mapping], str]  # a `method:` section -> its display name


def method_section(params: Mapping[str, str]) -> dict:
    """The `method:` section of a run rebuilt from its flattened params (`method.distill.sft_weight` ->
    {"distill": {"sft_weight": ...}}); MLflow's "None" is None again, other values stay strings."""
    section: dict = {}
    for key, value in params.items():
        if not key.startswith("method."):
            continue
        *path, leaf = key.split(".")[1:]
        node = section
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = None if value == "None" else value
    return section


def base_label(group: Group, user: Mapping[str, str], display: Display | None = None) -> str:
    """Rules 1-3 above, before groups that share a label are told apart."""
    for key in (group.overrides, group.method):
        if key in user:
            return str(user[key])
    section = method_section(group.runs[0].params)
    section["name"] = group.method
    if section.get("label") not in (None, "", "None"):
        return str(section["label"])
    return display(section) if display else group.method.upper()


def _knobs(split: tuple[tuple[str, str], ...], keys: list[str]) -> str:
    """`k=v` for the params in `keys`, each named by its last part unless two share that part."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    names = {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}
    values = dict(split)
    return ", ".join(f"{names[k]}={values.get(k, '-')}" for k in keys)


def assign_labels(
    groups: list[Group], user: Mapping[str, str] | None = None, display: Display | None = None
) -> None:
    """Set every group's `label` (in place); labels are unique within a stream."""
    user = dict(user or {})
    chosen = {id(g): base_label(g, user, display) for g in groups}
    for stream in {g.stream for g in groups}:
        members = [g for g in groups if g.stream == stream]
        for label in {chosen[id(g)] for g in members}:
            same = [g for g in members if chosen[id(g)] == label]
            if len(same) < 2:
                continue
            keys = sorted({k for g in same for k, _ in g.split})
            differing = [k for k in keys if len({dict(g.split).get(k) for g in same}) > 1]
            for g in same:
                knobs = _knobs(g.split, differing)
                chosen[id(g)] = f"{label} ({knobs})" if knobs else f"{label} ({g.overrides})"
    for g in groups:
        g.label = chosen[id(g)]
