"""End to end: the whole DAG on the smoke preset through Snakemake and through DVC.

Both runs happen in scratch copies of the project (fresh git + DVC repos); the checks compare
their outputs, rerun both tools to see that nothing is redone, and read the MLflow store.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import run_ok, stage_env, tool

# prepare_data, train x2, train_defense x3, attack x (5 models x 3 attacks), evaluate, report, and the
# studies: train_copy, madry_table, deepfool_study x1, train_transfer x4, transfer, units; the attack
# suite's: kurakin x2, train_thermometer, obfuscated, substitute, cw_study, onepixel_study, jsma_study;
# physical (print-and-photo destruction rates); uap x3 and uap_study (universal perturbations); the
# generative defenses: train_pixelcnn, train_gan, generative_defenses
SMOKE_JOBS = 1 + 2 + 3 + 5 * 3 + 1 + 1 + 1 + 1 + 1 + 4 + 1 + 1 + 2 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 3 + 1 + 3


def _run(cmd, cwd, timeout=900):
    return run_ok(cmd, cwd, timeout=timeout)


def _runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("advlab")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def _sqlite(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


def test_snakemake_builds_everything_then_nothing(snake_run):
    project, first, second = snake_run
    for rel in ["reports/report.md", "reports/figures/examples_lenet.png", "reports/figures/norms_lenet.png",
                "reports/figures/training_curves.png", "metrics/smoke/robustness.json",
                "metrics/smoke/timing.json", "models/smoke/lenet.pt", "data/prepared/smoke/meta.json",
                "results/smoke/attacks/lenet/deepfool.csv"]:
        assert (project / rel).exists(), rel
    assert "Nothing to be done" in second.stdout + second.stderr


def test_report_has_tables_beside_the_paper(snake_run):
    project, _, _ = snake_run
    text = (project / "reports" / "report.md").read_text()
    assert "# advlab report — preset `smoke`" in text
    assert "## Robustness" in text and "## DeepFool beside the paper" in text and "## Defended models" in text
    assert "fc100_100-madry" in text and "PGD adversarial training" in text
    assert "ρ_adv DeepFool (paper)" in text and "ρ_adv FGSM (ours)" in text and "ρ_adv L-BFGS (ours)" in text
    assert "## Madry et al.'s table" in text and "| CW+ " in text and "A'" in text
    assert "**Table 3**" in text and "**Figure 6**" in text and "**Figure 7**" in text
    assert "## Transfer of adversarial examples" in text and "gaussian stddev 0.3" in text
    assert "amplified to RMS 0.1" in text
    assert "## Units vs random directions" in text
    assert "## Generative defenses: PixelDefend and Defense-GAN" in text and "BPDA (generator)" in text
    for fig in ["pixeldefend_examples.png", "defensegan_reconstructions.png", "generative_training.png"]:
        assert f"(figures/{fig})" in text
    for fig in ["examples_lenet.png", "norms_fc100_100.png", "training_curves.png", "deepfool_finetune.png",
                "deepfool_magnified.png", "units_unit.png", "units_random.png"]:
        assert f"(figures/{fig})" in text


def test_one_mlflow_run_per_stage_execution(snake_run, mlflow_server):
    """The Snakemake run logged to a real MLflow server (2 jobs at a time): every stage execution is
    there, FINISHED, once; nothing went to a local store."""
    project, _, _ = snake_run
    client, runs = _runs(mlflow_server)
    assert not (project / "mlflow.db").exists()
    assert len(runs) == SMOKE_JOBS  # the second, up-to-date invocation added none
    assert {r.info.status for r in runs} == {"FINISHED"}
    keys = [(r.data.tags["advlab.stage"], r.data.tags.get("advlab.model"), r.data.tags.get("advlab.attack"),
             r.data.tags.get("advlab.defense")) for r in runs]
    assert len(set(keys)) == SMOKE_JOBS  # no stage recorded twice, none lost
    # artifacts went to the server's artifact store, not into the project
    assert not (project / "mlartifacts").exists()
    stages = sorted(r.data.tags["advlab.stage"] for r in runs)
    assert stages.count("attack") == 15 and stages.count("train") == 2 and stages.count("train_defense") == 3
    assert stages.count("train_transfer") == 4 and stages.count("deepfool_study") == 1
    assert {"train_copy", "madry_table", "transfer", "units"} <= set(stages)
    train = next(r for r in runs if r.data.tags["advlab.stage"] == "train")
    assert train.data.tags["advlab.preset"] == "smoke"
    assert train.data.params["train.epochs"] == "2"
    history = client.get_metric_history(train.info.run_id, "val_acc")
    assert len(history) == 2  # one point per epoch
    report = next(r for r in runs if r.data.tags["advlab.stage"] == "report")
    names = {a.path for a in client.list_artifacts(report.info.run_id)}
    assert {"report.md", "figures"} <= names
    # the generative models' training curves, one point per epoch
    pixelcnn = next(r for r in runs if r.data.tags["advlab.stage"] == "train_pixelcnn")
    assert len(client.get_metric_history(pixelcnn.info.run_id, "train_bpd")) == 1
    gan = next(r for r in runs if r.data.tags["advlab.stage"] == "train_gan")
    assert len(client.get_metric_history(gan.info.run_id, "d_loss")) == 1
    defenses = next(r for r in runs if r.data.tags["advlab.stage"] == "generative_defenses")
    assert "pixeldefend.adaptive_identity_acc" in defenses.data.metrics


def test_dvc_builds_everything_then_nothing(dvc_run):
    project, first, second = dvc_run
    assert (project / "reports" / "report.md").exists()
    assert "Data and pipelines are up to date" in second.stdout
    _, runs = _runs(_sqlite(project))
    assert len(runs) == SMOKE_JOBS
    metrics = subprocess.run([tool("dvc"), "metrics", "show", "--json"], cwd=project, capture_output=True,
                             text=True, env=stage_env())
    assert "robustness.json" in metrics.stdout
    lock = (project / "dvc.lock").read_text()
    for out in ["results/smoke/generative/pixelcnn.pt", "results/smoke/generative/gan.pt"]:
        assert f"path: {out}" in lock and (project / out).exists()  # DVC-tracked checkpoints


def test_snakemake_and_dvc_outputs_agree(snake_run, dvc_run):
    """Two independent runs of the same params and seed (one per orchestrator) on CPU: every metrics
    JSON is bit-identical. Only metrics/<preset>/timing.json holds wall times, by design."""
    snake, dvc = snake_run[0], dvc_run[0]
    found = sorted(str(p.relative_to(snake)) for p in (snake / "metrics").rglob("*.json"))
    assert len(found) >= 20 and sorted(str(p.relative_to(dvc)) for p in (dvc / "metrics").rglob("*.json")) == found
    differ = [rel for rel in found + ["data/prepared/smoke/meta.json"]
              if rel != "metrics/smoke/timing.json" and (snake / rel).read_bytes() != (dvc / rel).read_bytes()]
    assert differ == []
    for rel in ["results/smoke/attacks/lenet/deepfool.csv", "results/smoke/attacks/fc100_100/pgd.csv",
                "results/smoke/attacks/lenet/deepfool.pt", "data/prepared/smoke/tensors.pt"]:
        assert (snake / rel).read_bytes() == (dvc / rel).read_bytes(), rel


def test_study_outputs_hold_the_papers_quantities(snake_run):
    project, _, _ = snake_run
    madry = json.loads((project / "metrics/smoke/madry_table.json").read_text())
    assert madry["model"] == "fc100_100-madry" and madry["n_points"] == 24
    acc = madry["accuracy"]
    assert {"pgd.3x1.A.A", "pgd.5x2.A_prime.A", "cw_plus.3x1.B.natural", "fgsm.A.A"} <= set(acc)
    assert all(0 <= v <= 1 for v in acc.values())
    copy_meta = json.loads((project / "results/smoke/madry_table/copy/fc100_100-madry.json").read_text())
    assert copy_meta["epochs"] == 2  # the defense's own recipe ...
    import torch  # ... with another seed: an independent copy, different weights

    a = torch.load(project / "models/smoke/fc100_100-madry.pt", weights_only=True)
    b = torch.load(project / "results/smoke/madry_table/copy/fc100_100-madry.pt", weights_only=True)
    assert b["meta"]["seed"] == a["meta"]["seed"] + 1
    assert not torch.equal(a["state_dict"]["net.fc1.weight"], b["state_dict"]["net.fc1.weight"])
    study = json.loads((project / "metrics/smoke/deepfool_study/fc100_100.json").read_text())
    assert 0 < study["fgsm"]["eps"] < 1 and study["deepfool_l2"]["success_rate"] == 1.0
    assert set(study["finetune"]["after"]) == {"deepfool", "fgsm", "deepfool_x3"}
    transfer = json.loads((project / "metrics/smoke/transfer.json").read_text())
    assert set(transfer["models"]) == {"fc10_1e-4", "fc100_100_p1", "ae400_10", "fc100_100_p2"}
    units = json.loads((project / "metrics/smoke/units.json").read_text())
    assert units["layer"] == "relu" and len(units["units"]) == 2


def test_uap_stages_hold_the_papers_quantities(snake_run):
    project, _, _ = snake_run
    import pandas as pd

    for model in ("fc100_100", "lenet", "fc100_100-madry"):
        m = json.loads((project / f"metrics/smoke/uap/{model}.json").read_text())
        u = m["uap"]
        assert m["n_build"] == 40 and m["n_test"] == 50
        assert u["l2.norm"] <= 4.0 + 1e-4
        assert u["linf.norm"] <= 0.3 + 1e-6
        assert all(0 <= u[f"{n}.{k}"] <= 1 for n in ("l2", "linf") for k in ("fooling_train", "fooling_test"))
        table = pd.read_csv(project / f"results/smoke/uap/{model}/fooling.csv")
        kinds = set(table["perturbation"])
        assert {"universal (Algorithm 1)", "random (sphere)", "random (Gaussian)", "mean of DeepFool perturbations",
                "singular vector 1 (+)", "singular vector 1 (-)"} <= kinds
        curve = pd.read_csv(project / f"results/smoke/uap/{model}/curve.csv")
        assert sorted(curve.loc[curve["norm"] == "l2", "xi"]) == [2.0, 4.0]
    study = json.loads((project / "metrics/smoke/uap_study.json").read_text())["metrics"]
    assert {"cross.l2.mean_own", "finetune.fooling_after", "trajectory.robust.mean_cos_to_mean_final"} <= set(study)
    cross = pd.read_csv(project / "results/smoke/uap_study/cross_model.csv")
    assert len(cross) == 2 * 2 * 2  # norms x sources x targets
    traj = pd.read_csv(project / "results/smoke/uap_study/trajectories.csv")
    assert len(traj) == 2 * 4 * 10  # models x (steps + 1) x images
    text = (project / "reports" / "report.md").read_text()
    assert "## Universal adversarial perturbations" in text and "Doubly universal" in text
    for fig in ["uap_fooling_vs_xi.png", "uap_dominant_labels.png", "uap_spectra.png", "uap_gradient_alignment.png",
                "uap_perturbations.png"]:
        assert f"(figures/{fig})" in text


def test_dvc_adopts_snakemake_outputs_without_rerunning(snake_run):
    project, _, _ = snake_run
    subprocess.run([tool("python"), "-m", "pipeline.preset", "smoke"], cwd=project, check=True, env=stage_env())
    _run([tool("dvc"), "commit", "--force"], project)
    status = _run([tool("dvc"), "status"], project)
    assert "Data and pipelines are up to date" in status.stdout


def test_snakemake_html_report(snake_run):
    project, _, _ = snake_run
    _run([tool("snakemake"), "--configfile", "presets/smoke.yaml", "--report", "reports/report.html"], project)
    assert (project / "reports" / "report.html").stat().st_size > 10_000
