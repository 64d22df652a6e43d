"""Stage uap: universal adversarial perturbations of one model (Moosavi-Dezfooli, Fawzi, Fawzi,
Frossard 2017, Algorithm 1), the same-norm baselines, dominant labels and the spectrum of the
decision-boundary normals.

    python -m pipeline.uap --model lenet

X is the first `uap.n_build` training images; the fooling rate (prediction on clip(x + v)
changed against the clean prediction) is measured on X and on the first `uap.n_test` test
images, which the algorithm never sees. For each norm of `uap.norms` (l2, linf):

- the UAP at the norm's `xi` (Algorithm 1: at most `max_passes` passes over X, stopping at
  fooling rate 1 - delta on X; DeepFool capped at `max_iter` iterations), its build time;
- baselines at the same norm: `baselines.n_random` random directions (uniform on the sphere,
  and Gaussian), the mean of the per-image DeepFool perturbations of X, their top
  `baselines.svd_k` singular vectors in both signs, and random vectors in the span of the top
  `baselines.subspace_dim` singular vectors of the boundary normals (the paper's subspace S);
- the dominant labels: where the points the UAP fools land (clean label -> perturbed label);
- the fooling rate against xi (`curve`), UAPs built on the first `curve_build.n_build` points of
  X with at most `curve_build.max_passes` passes, so that the curve stays affordable.

The spectrum: singular values of the matrix of DeepFool boundary normals at
`baselines.n_spectrum` test points, beside those of as many random unit vectors.
"""
from __future__ import annotations

import math
import sys
import time

import pandas as pd
import torch

from advlab.attacks.uap import (
    boundary_normals,
    energy_dimension,
    fooled_labels,
    fooling_rate,
    mean_direction,
    minimal_perturbations,
    random_perturbation,
    singular_directions,
    singular_values,
    subspace_perturbation,
    universal_perturbation,
)
from advlab.models import predict
from pipeline import paths
from pipeline.artifacts import device, load_frozen, load_prepared
from pipeline.io import save_tensors, write_csv, write_json
from pipeline.stage import run_stage


def build(model, x, xi: float, norm: str, cfg: dict, seed: int, *, n_build: int | None = None,
          max_passes: int | None = None):  # fmt: skip
    """Algorithm 1 with the stage's settings (optionally on fewer points / passes)."""
    pts = x[: n_build or cfg["n_build"]]
    return universal_perturbation(model, pts, xi=xi, p=norm, delta=cfg["delta"],
                                  max_passes=max_passes or cfg["max_passes"], overshoot=cfg["overshoot"],
                                  max_iter=cfg["max_iter"], chunk=cfg["chunk"], checks_per_pass=cfg["checks_per_pass"],
                                  generator=torch.Generator().manual_seed(seed))  # fmt: skip


def baselines(model, v_shape, xi: float, norm: str, r_build: torch.Tensor, normals: torch.Tensor, cfg: dict,
              seed: int) -> dict[str, torch.Tensor]:  # fmt: skip
    """Same-norm perturbations to set beside the UAP: name -> [K, C, H, W]."""
    b = cfg["baselines"]
    g = torch.Generator().manual_seed(seed + 1)
    out = {
        "random (sphere)": torch.stack([random_perturbation(v_shape, xi, norm, kind="sphere", generator=g)
                                        for _ in range(b["n_random"])]),
        "random (Gaussian)": torch.stack([random_perturbation(v_shape, xi, norm, kind="gaussian", generator=g)
                                          for _ in range(b["n_random"])]),
        "mean of DeepFool perturbations": mean_direction(r_build, xi, norm)[None],
    }
    k = min(b["svd_k"], *r_build.flatten(1).shape)
    signed = singular_directions(r_build, k, xi, norm)
    for i in range(k):
        out[f"singular vector {i + 1} (+)"] = signed[2 * i : 2 * i + 1]
        out[f"singular vector {i + 1} (-)"] = signed[2 * i + 1 : 2 * i + 2]
    dim = min(b["subspace_dim"], *normals.shape)
    out[f"random in S (dim {dim})"] = subspace_perturbation(normals.view(-1, *v_shape), dim, xi, norm,
                                                            count=b["n_random"], generator=g)  # fmt: skip
    return out


def main(params: dict, args) -> dict:
    preset, cfg, name, seed = params["preset"], params["uap"], args.model, params["seed"]
    dev = device()
    data = load_prepared(preset)
    model = load_frozen(preset, name, dev)
    x = data.x_train[: cfg["n_build"]].to(dev)
    xt = data.x_test[: cfg["n_test"]].to(dev)
    pred_x, pred_t = predict(model, x), predict(model, xt)
    num_classes = int(max(pred_x.max(), pred_t.max(), data.y_test.max())) + 1
    timings: dict[str, float] = {}

    began = time.perf_counter()
    r_build, ok_build = minimal_perturbations(model, x, p="l2", overshoot=cfg["overshoot"], max_iter=50)
    n_spec = min(cfg["baselines"]["n_spectrum"], len(xt))
    r_test, _ = minimal_perturbations(model, xt[:n_spec], p="l2", overshoot=cfg["overshoot"], max_iter=50)
    normals = boundary_normals(r_test)
    timings["deepfool_per_image"] = time.perf_counter() - began
    rho = float((r_build.flatten(1).norm(dim=1)[ok_build] / x.flatten(1).norm(dim=1)[ok_build]).mean())

    rows, curve, labels, tensors, metrics = [], [], [], {}, {"deepfool_rho_adv_l2": rho}
    for norm, ncfg in cfg["norms"].items():
        xi = float(ncfg["xi"])
        r = build(model, x, xi, norm, cfg, seed)
        timings[f"{norm}.build"] = r.seconds
        tensors[f"uap_{norm}"] = r.v.cpu()
        uap_train = fooling_rate(model, x, r.v, clean_pred=pred_x)
        uap_test = fooling_rate(model, xt, r.v, clean_pred=pred_t)
        rows.append({"norm": norm, "xi": xi, "perturbation": "universal (Algorithm 1)", "fooling_train": uap_train,
                     "fooling_test": uap_test, "fooling_test_sd": 0.0, "count": 1})  # fmt: skip
        for kind, vs in baselines(model, tuple(r.v.shape), xi, norm, r_build.cpu(), normals.cpu(), cfg, seed).items():
            tr = [fooling_rate(model, x, v.to(dev), clean_pred=pred_x) for v in vs]
            te = [fooling_rate(model, xt, v.to(dev), clean_pred=pred_t) for v in vs]
            rows.append({"norm": norm, "xi": xi, "perturbation": kind, "fooling_train": sum(tr) / len(tr),
                         "fooling_test": sum(te) / len(te),
                         "fooling_test_sd": float(torch.tensor(te).std()) if len(te) > 1 else 0.0, "count": len(vs)})
        best = max((row for row in rows if row["norm"] == norm and row["perturbation"] != "universal (Algorithm 1)"),
                   key=lambda row: row["fooling_test"])  # fmt: skip
        random_test = next(row["fooling_test"] for row in rows
                           if row["norm"] == norm and row["perturbation"] == "random (sphere)")  # fmt: skip
        metrics.update({f"{norm}.xi": xi, f"{norm}.fooling_train": uap_train, f"{norm}.fooling_test": uap_test,
                        f"{norm}.random_test": random_test, f"{norm}.best_baseline_test": best["fooling_test"],
                        f"{norm}.passes": r.passes,
                        f"{norm}.norm": r.norm, f"{norm}.reached_target": uap_train >= 1 - cfg["delta"]})  # fmt: skip
        matrix = fooled_labels(model, xt, r.v, clean_pred=pred_t, num_classes=num_classes)
        labels += [{"norm": norm, "xi": xi, "clean": i, "perturbed": j, "count": int(matrix[i, j])}
                   for i in range(num_classes) for j in range(num_classes) if i != j]
        top = matrix.sum(0)
        metrics[f"{norm}.dominant_label"] = int(top.argmax())
        metrics[f"{norm}.dominant_label_share"] = float(top.max() / top.sum().clamp_min(1))

        cc = cfg["curve_build"]
        for xi_c in ncfg["curve"]:
            xi_c = float(xi_c)
            rc = build(model, x, xi_c, norm, cfg, seed, n_build=cc["n_build"], max_passes=cc["max_passes"])
            noise = random_perturbation(tuple(rc.v.shape), xi_c, norm, generator=torch.Generator().manual_seed(seed))
            curve.append({"norm": norm, "xi": xi_c, "fooling_build": rc.fooling_rate,
                          "fooling_test": fooling_rate(model, xt, rc.v, clean_pred=pred_t),
                          "random_test": fooling_rate(model, xt, noise.to(dev), clean_pred=pred_t),
                          "passes": rc.passes, "build_seconds": rc.seconds})  # fmt: skip
            tensors[f"curve_{norm}_{xi_c:g}"] = rc.v.cpu()

    sv_normals = singular_values(normals.cpu())
    g = torch.Generator().manual_seed(seed + 2)
    rand = torch.randn(normals.shape, generator=g)
    sv_random = singular_values(rand / rand.norm(dim=1, keepdim=True))
    spectrum = pd.DataFrame({"k": range(1, len(sv_normals) + 1), "normals": sv_normals.numpy(),
                             "random": sv_random[: len(sv_normals)].numpy()})  # fmt: skip
    for key, sv in (("normals", sv_normals), ("random", sv_random)):
        metrics[f"spectrum.{key}.dim90"] = energy_dimension(sv, 0.9)
    metrics["spectrum.n_normals"] = int(normals.shape[0])

    write_csv(paths.path(paths.UAP_TABLE, preset=preset, model=name), pd.DataFrame(rows))
    write_csv(paths.path(paths.UAP_CURVE, preset=preset, model=name), pd.DataFrame(curve))
    write_csv(paths.path(paths.UAP_LABELS, preset=preset, model=name), pd.DataFrame(labels))
    write_csv(paths.path(paths.UAP_SPECTRUM, preset=preset, model=name), spectrum)
    save_tensors(paths.path(paths.UAP_PERTURBATIONS, preset=preset, model=name), tensors)
    write_json(paths.path(paths.UAP_METRICS, preset=preset, model=name),
               {"model": name, "n_build": len(x), "n_test": len(xt), "delta": cfg["delta"], "uap": metrics})
    write_json(paths.path(paths.UAP_TIMING, preset=preset, model=name), {"seconds": timings})
    logged = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
    logged.update({f"{norm}.build_seconds": timings[f"{norm}.build"] for norm in cfg["norms"]})
    return {"params": {"model": name, "uap": cfg, "seed": seed}, "metrics": logged,
            "artifacts": [paths.path(paths.UAP_TABLE, preset=preset, model=name),
                          paths.path(paths.UAP_CURVE, preset=preset, model=name)]}  # fmt: skip


if __name__ == "__main__":
    # one thread: DeepFool on chunks of 16 points gains little from a second core, so two models'
    # jobs run side by side instead (the rule declares `threads: 1` to match)
    sys.exit(run_stage("uap", main, arguments=("model",), threads=1))
