"""Header: what was run, on what, and the conventions every number below follows."""
from __future__ import annotations

from pipeline import paths
from pipeline.tracking import git_commit


def render(ctx) -> str:
    p = ctx.params
    meta = ctx.json(paths.PREPARED_META) or {}
    shape = "×".join(map(str, meta.get("shape", []))) or "?"
    return "\n".join([
        f"# advlab report — preset `{ctx.preset}`",
        "",
        f"- data: `{p['data']['dataset']}`, {meta.get('n_train', '?')} training / {meta.get('n_test', '?')} test "
        f"images of {shape}, checksum `{meta.get('checksum', '?')[:16]}`",
        f"- models: {', '.join(f'`{m}`' for m in p['eval']['models'])}; attacks: "
        f"{', '.join(f'`{a}`' for a in p['eval']['attacks'])} on the first {p['eval']['n_points']} test images",
        f"- seed {p['seed']}, git commit `{git_commit()}`",
        "",
        "**Conventions.** Images are float32 in [0, 1]; every eps and norm is in that unit. "
        "*Success rate* counts, among points the model classifies correctly, those whose adversarial "
        "prediction differs from the label. *Robust accuracy* counts points classified correctly both "
        "clean and under attack, over all attacked points. Norms and "
        "ρ_adv = mean ‖r‖₂/‖x‖₂ (ρ∞ = mean ‖r‖∞/‖x‖∞) are taken over successful points only; a failed "
        "point is never averaged in as a zero perturbation. Note that the DeepFool paper measured ρ_adv "
        "on MatConvNet inputs (0–255 minus the mean image); the DeepFool table gives ours in both conventions.",
    ])
