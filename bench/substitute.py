"""Practical black-box attack (Papernot et al. 2017): substitute training + FGSM transfer.

    python -m bench.substitute                       # paper settings: 150 seeds, 6 rounds, lambda 0.1, tau 3
    python -m bench.substitute --seeds 20 --rounds 2 --epochs 1 --oracle-epochs 1   # tiny check

No peer library implements the attack in PyTorch (cleverhans' tutorial is TF1), so this
measures ours alone: the substitute's accuracy and oracle agreement per round, oracle
queries, wall time, and FGSM transfer at eps = 0.3 plus the eps sweep. The oracle is the
pipeline's LeNet (models/mnist5k/lenet.pt when it exists, else trained here on mnist5k's
4,000 training images); the seeds are the first ``--seeds`` test images and the evaluation
set is the rest of the test split (as cleverhans: holdout 150, evaluation on the remainder).
Writes bench/out/substitute.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from advlab.attacks.substitute import DEFAULT_EPS_SWEEP, LabelOracle, transfer_attack, transfer_eps_sweep
from advlab.data import load_dataset
from advlab.models import build_model, load_checkpoint
from advlab.models.inference import accuracy
from advlab.training import ArrayDataModule, fit_classifier
from advlab.training.substitute import train_substitute
from pipeline.config import ROOT, load_params

OUT = ROOT / "bench" / "out"


def oracle_and_data(oracle_epochs: int | None):
    """The LeNet oracle and mnist5k; ``oracle_epochs`` forces a fresh fit of that many epochs."""
    params = load_params(ROOT / "params.yaml")
    data = params["data"]
    ds = load_dataset("mnist5k", n_train=data["n_train"], n_test=data["n_test"], seed=params["seed"])
    ckpt = ROOT / "models" / "mnist5k" / "lenet.pt"
    t0 = time.perf_counter()
    if ckpt.exists() and oracle_epochs is None:
        model, _ = load_checkpoint(ckpt)
        source = str(ckpt.relative_to(ROOT))
    else:
        from pipeline.train import effective_train_config

        cfg = effective_train_config(params["train"], "lenet")
        epochs = oracle_epochs or cfg["epochs"]
        x = ds.x_train
        model = build_model("lenet", in_channels=1, image_size=28, num_classes=10,
                            mean=x.mean(dim=(0, 2, 3)).tolist(), std=x.std(dim=(0, 2, 3)).tolist(),
                            init_seed=params["seed"])
        dm = ArrayDataModule(ds.x_train, ds.y_train, val_fraction=cfg["val_fraction"],
                             batch_size=cfg["batch_size"], seed=params["seed"])
        with tempfile.TemporaryDirectory() as log_dir:
            fit_classifier(model, dm, epochs=epochs, lr=cfg["lr"], optimizer=cfg["optimizer"],
                           momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
                           lr_schedule=None if cfg["lr_schedule"] == "none" else cfg["lr_schedule"],
                           seed=params["seed"], accelerator="cpu", log_dir=log_dir)
        source = f"LeNet trained here, {epochs} epochs on {len(ds.x_train)} images"
    model = model.cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, ds, source, time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=150, help="seed points (first test images)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=10, help="substitute epochs per round")
    parser.add_argument("--lmbda", type=float, default=0.1)
    parser.add_argument("--tau", type=int, default=3)
    parser.add_argument("--reservoir", type=int, nargs=2, metavar=("SIGMA", "KAPPA"))
    parser.add_argument("--init", choices=("continue", "reinit"), default="continue")
    parser.add_argument("--clip", action="store_true", help="clip synthetic points to [0, 1] (default: no, as cleverhans)")
    parser.add_argument("--jacobian", choices=("logits", "probs"), default="probs")
    parser.add_argument("--substitute", default="fc200_200")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--oracle-epochs", type=int, help="train the oracle for this many epochs (default: params)")
    parser.add_argument("--out", default="substitute.json")
    args = parser.parse_args(argv)

    oracle_model, ds, source, oracle_seconds = oracle_and_data(args.oracle_epochs)
    x_seed = ds.x_test[: args.seeds]
    x_eval, y_eval = ds.x_test[args.seeds :], ds.y_test[args.seeds :]
    oracle_acc = accuracy(oracle_model, x_eval, y_eval)
    print(f"oracle: {source} ({oracle_seconds:.0f} s); accuracy on the {len(x_eval)} evaluation images "
          f"{oracle_acc:.1%}; threads: {torch.get_num_threads()}")

    oracle = LabelOracle(oracle_model)
    res = train_substitute(oracle, x_seed, substitute=args.substitute, rounds=args.rounds, epochs=args.epochs,
                           lmbda=args.lmbda, tau=args.tau,
                           reservoir=tuple(args.reservoir) if args.reservoir else None, init=args.init,
                           clip=args.clip, jacobian=args.jacobian, seed=args.seed,
                           x_eval=x_eval, y_eval=y_eval)
    print(res.history.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"oracle queries {res.queries} (counter {oracle.queries}); substitute training {res.seconds:.1f} s")

    t0 = time.perf_counter()
    tr = transfer_attack(res.model, oracle_model, x_eval, y_eval, method="fgsm", eps=args.eps)
    print(f"FGSM eps={args.eps} on the substitute ({time.perf_counter() - t0:.2f} s): transfer rate "
          f"{tr.transfer_rate:.1%} of oracle-correct points; oracle accuracy on adversarials "
          f"{tr.oracle_adv_accuracy:.1%} (clean {tr.oracle_accuracy:.1%})")
    sweep = transfer_eps_sweep(res.model, oracle_model, x_eval, y_eval, DEFAULT_EPS_SWEEP)
    print(sweep.to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    OUT.mkdir(parents=True, exist_ok=True)
    report = {"settings": vars(args), "oracle": source, "oracle_accuracy": oracle_acc, "queries": res.queries,
              "seconds": res.seconds, "history": res.history.to_dict(orient="records"),
              "transfer": tr.rates(), "sweep": sweep.to_dict(orient="records"), "threads": torch.get_num_threads()}
    (OUT / args.out).write_text(json.dumps(report, indent=2))
    print(f"written: {(OUT / args.out).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
