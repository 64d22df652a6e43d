"""Natural training: accuracy per model and the per-epoch curves."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline import paths  # noqa: E402
from pipeline.report_sections.context import table  # noqa: E402


def render(ctx) -> str | None:
    rows, histories = [], {}
    for model in ctx.trained:
        m = ctx.json(paths.TRAIN_METRICS, model=model)
        if m is None:
            continue
        h = ctx.csv(paths.TRAIN_HISTORY, model=model)
        seconds = float(h["seconds"].sum()) if h is not None and "seconds" in h else float("nan")
        rows.append({"model": model, "test accuracy": f"{m['test_accuracy']:.4f}",
                     "test error": f"{m['test_error']:.2%}", "best val accuracy": f"{m['best_val_accuracy']:.4f}",
                     "best epoch": m["best_epoch"], "epochs": m["epochs"], "parameters": m["n_parameters"],
                     "processes": m.get("world_size", 1), "training time": f"{seconds:.1f} s"})
        if h is not None:
            histories[model] = h
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    if (frame["processes"] == 1).all():
        frame = frame.drop(columns="processes")  # shown only when some fit was data-parallel (train.devices)
    out = ["## Training", "", "Natural models by architecture name; defended variants as <arch>-<defense>. "
           "Training time is the wall time of the epochs on this machine.", "", table(frame), ""]
    if histories:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for model, h in histories.items():
            axes[0].plot(h["epoch"] + 1, h["train_loss"], "--", label=f"{model} train")
            axes[0].plot(h["epoch"] + 1, h["val_loss"], label=f"{model} val")
            axes[1].plot(h["epoch"] + 1, h["val_acc"], label=model)
        axes[0].set(xlabel="epoch", ylabel="cross-entropy", title="loss")
        axes[1].set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
        for ax in axes:
            ax.legend(fontsize=7)
        out.append(ctx.figure(fig, "training_curves", "training curves"))
        plt.close(fig)
    return "\n".join(out)
