"""params.yaml validation: one schema, clear messages naming the key, nothing written."""
from __future__ import annotations

import copy
import subprocess
import time

import pytest
import yaml

from advlab.models import MODEL_NAMES
from pipeline.config import ParamsError, deep_merge, load_params, preset_path, read_yaml, validate
from tests.conftest import ROOT, project_copy, stage_env, tool


@pytest.fixture
def params():
    return load_params(ROOT / "params.yaml")


@pytest.mark.parametrize("name", ["mnist5k", "mnist", "mnist_cpu", "cifar10", "smoke"])
def test_every_preset_is_valid(params, name):
    merged = deep_merge(params, read_yaml(preset_path(name)))
    validate(merged, name)
    assert merged["preset"] == name


@pytest.mark.parametrize("overlay", ["cifar10_subset_cpu", "cifar10_generative_cpu"])
def test_cifar10_subset_overlays_are_valid(params, overlay):
    merged = deep_merge(deep_merge(params, read_yaml(ROOT / "presets" / "cifar10.yaml")),
                        read_yaml(ROOT / "presets" / "overlays" / f"{overlay}.yaml"))
    assert validate(merged)["data"]["dataset"] == "npz"


def test_mnist5k_preset_names_every_key():
    # complete on its own, so `python -m pipeline.preset mnist5k` restores every default
    validate(read_yaml(preset_path("mnist5k")), "presets/mnist5k.yaml")


def test_preset_command_rewrites_params_and_keeps_comments(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "params.yaml"
    target.write_text((ROOT / "presets" / "mnist5k.yaml").read_text())
    run = lambda name: subprocess.run([sys.executable, "-m", "pipeline.preset", name, "--params", str(target)],
                                      cwd=ROOT, capture_output=True, text=True)
    assert run("smoke").returncode == 0
    smoke = read_yaml(target)
    assert smoke["preset"] == "smoke" and smoke["data"]["n_train"] == 400
    assert "# names the output folders" in target.read_text()
    assert run("mnist5k").returncode == 0
    assert read_yaml(target) == read_yaml(ROOT / "presets" / "mnist5k.yaml")
    bad = run("nope")
    assert bad.returncode == 2 and "unknown preset 'nope'" in bad.stderr


def test_schema_model_names_match_registry():
    schema = yaml.safe_load((ROOT / "pipeline/schemas/params.schema.yaml").read_text())
    assert sorted(schema["$defs"]["model_name"]["enum"]) == sorted(MODEL_NAMES)


@pytest.mark.faults_bad_input
@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda p: p["train"].__setitem__("epochz", 3), "unknown key train.epochz"),
        (lambda p: p.__setitem__("extra_section", {}), "unknown key extra_section"),
        (lambda p: p["attacks"]["fgsm"].__setitem__("eps", -0.1), "attacks.fgsm.eps: -0.1 is less than the minimum of 0"),
        (lambda p: p["attacks"]["pgd"].__setitem__("steps", 0), "attacks.pgd.steps: 0 is less than the minimum of 1"),
        (lambda p: p["attacks"]["deepfool"].__setitem__("overshoot", -1), "attacks.deepfool.overshoot"),
        (lambda p: p["train"].__setitem__("epochs", "ten"), "train.epochs: 'ten' is not of type 'integer'"),
        (lambda p: p["models"].append("resnet9000"), "models[3]: 'resnet9000' is not allowed"),
        (lambda p: p["eval"]["attacks"].append("no_such_attack"), "eval.attacks[6]: unknown attack 'no_such_attack'"),
        (lambda p: p["attacks"]["fgsm"].__setitem__("type", "fgsn"), "attacks.fgsm.type: 'fgsn' is not allowed"),
        (lambda p: p["data"].__setitem__("dataset", "imagenet"), "data.dataset: 'imagenet' is not allowed"),
        (lambda p: p["data"].__setitem__("n_train", 4900), "exceeds the 5000 images of mnist5k"),
        (lambda p: p["eval"]["models"].append("fc10-madry"), "eval.models[5]: no stage trains 'fc10-madry'"),
        (lambda p: p["eval"]["models"].append("lenet-robust"), "eval.models[5]: 'lenet-robust' does not match"),
        (lambda p: p["defenses"]["madry"].__setitem__("mix_clean", 1.5), "defenses.madry.mix_clean: 1.5 is greater"),
        (lambda p: p["defenses"]["distilled"].__setitem__("temperature", 0), "defenses.distilled.temperature: 0"),
        (lambda p: p["madry_table"].__setitem__("model", "fc500_150-madry"),
         "madry_table.model: no stage trains 'fc500_150-madry'"),
        (lambda p: p["madry_table"].__setitem__("other", "nin"), "madry_table.other: 'nin' is not among `models`"),
        (lambda p: p["madry_table"].__setitem__("restarts", []), "madry_table.restarts: [] should be non-empty"),
        (lambda p: p["deepfool_study"]["models"].append("nin"), "deepfool_study.models[2]: 'nin' is not among"),
        (lambda p: p["deepfool_study"]["finetune"].__setitem__("alpha_models", ["fc500_150", "lenet"]) or
         p["deepfool_study"].__setitem__("models", ["lenet"]),
         "deepfool_study.finetune.alpha_models[0]: 'fc500_150' is not in deepfool_study.models"),
        (lambda p: p["transfer"]["cross_model"].append("fc999"), "transfer.cross_model[6]: 'fc999' is not defined"),
        (lambda p: p["transfer"]["models"].append(dict(p["transfer"]["models"][0])),
         "transfer.models[9].name: 'fc10_1e-4' is defined twice"),
        (lambda p: p["transfer"]["models"][0].__setitem__("pretrain_epochs", 3),
         "transfer.models[0].pretrain_epochs: only the ae400_10"),
        (lambda p: p["transfer"]["models"][0].__setitem__("half", "p3"), "transfer.models[0].half: 'p3' is not allowed"),
        (lambda p: p["units"].__setitem__("model", "nin"), "units.model: 'nin' is not among `models`"),
        (lambda p: p["physical"]["ablation"].__setitem__("eps", [0.5]), "physical.ablation.eps[0]: 0.5 is not among"),
        (lambda p: p["physical"]["print_photo"]["defocus"].__setitem__("radius", -1),
         "physical.print_photo.defocus.radius: -1 is less than the minimum of 0"),
        (lambda p: p["physical"]["print_photo"].__setitem__("blur", {}), "unknown key physical.print_photo.blur"),
        (lambda p: p["physical"]["print_photo"]["jpeg"].__setitem__("quality", 0),
         "physical.print_photo.jpeg.quality: 0 is less than the minimum of 1"),
        (lambda p: p["physical"]["print_photo"].__setitem__("order", ["jpeg"]),
         "physical.print_photo: steps ['quantize', 'perspective'"),
        (lambda p: p["physical"].__setitem__("models", ["fc500_150-fast"]), "physical.models[0]: no stage trains"),
        (lambda p: p["uap"].__setitem__("models", ["fc500_150-madry"]), "uap.models[0]: no stage trains"),
        (lambda p: p["uap"].__setitem__("delta", 1.0), "uap.delta: 1.0 is greater than or equal to the maximum of 1"),
        (lambda p: p["uap"]["norms"].__setitem__("l1", {"xi": 1.0, "curve": [1.0]}), "unknown key uap.norms.l1"),
        (lambda p: p["uap"]["norms"]["l2"].__setitem__("xi", -1.0), "uap.norms.l2.xi: -1.0 is less than the minimum"),
        (lambda p: p["uap_study"].__setitem__("cross", ["lenet", "lenet-distilled"]),
         "uap_study.cross[1]: 'lenet-distilled' is not among uap.models"),
        (lambda p: p["uap_study"].__setitem__("robust", "lenet-fast"), "uap_study.robust: 'lenet-fast' is not among"),
        (lambda p: p["uap_study"]["finetune"].__setitem__("norm", "l1"), "uap_study.finetune.norm: 'l1' is not allowed"),
        (lambda p: p["uap"]["norms"].pop("l2"), "uap_study.finetune.norm: 'l2' has no xi under uap.norms"),
        (lambda p: p["generative"].__setitem__("model", "nin"), "generative.model: 'nin' is not among `models`"),
        (lambda p: p["generative"]["pixelcnn"].__setitem__("kernel", 4), "generative.pixelcnn.kernel: must be odd"),
        (lambda p: p["data"].__setitem__("dataset", "cifar10"),
         "generative.pixelcnn.channels: must be a multiple of 3 for CIFAR-10's RGB images"),
        (lambda p: p["generative"]["defensegan"].__setitem__("approx", ["unrolled"]),
         "generative.defensegan.approx[0]: 'unrolled' is not allowed (expected one of: identity, generator)"),
        (lambda p: p["generative"]["defensegan"]["attack"].pop("eot_samples"),
         "generative.defensegan.attack: 'eot_samples' is a required property"),
        (lambda p: p["generative"]["pixeldefend"].__setitem__("eps_levels", 300),
         "generative.pixeldefend.eps_levels: 300 is greater than the maximum of 255"),
    ],
)
def test_bad_params_name_the_key(params, mutate, expected):
    bad = copy.deepcopy(params)
    mutate(bad)
    with pytest.raises(ParamsError) as err:
        validate(bad)
    assert expected in str(err.value)


@pytest.mark.faults_bad_input
def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ParamsError, match=r"unknown preset 'tiny' \(available: cifar10, mnist, mnist5k, mnist_cpu, smoke\)"):
        preset_path("tiny")


@pytest.mark.faults_bad_input
@pytest.mark.parametrize(
    "edit, expected",
    [
        (("  eps: 0.1\n", "  eps: -0.5\n"), "attacks.fgsm.eps"),
        (("  epochs: 15\n", "  epochs: 15\n  epohcs: 3\n"), "train.epohcs"),
        (("attacks: [fgsm, pgd, deepfool, deepfool_linf, bim, illc]", "attacks: [fgsm, pgd, deepfool, carlini]"),
         "carlini"),
        (("models: [lenet, fc500_150, wong_cnn]", "models: [lenet, resnet9000]"), "resnet9000"),
    ],
)
def test_malformed_params_stop_snakemake_fast_and_write_nothing(tmp_path, edit, expected):
    project = project_copy(tmp_path / "p")
    params_file = project / "params.yaml"
    text = params_file.read_text()
    assert edit[0] in text
    params_file.write_text(text.replace(edit[0], edit[1], 1))
    before = sorted(p.relative_to(project) for p in project.rglob("*") if ".git" not in p.parts)
    started = time.perf_counter()
    out = subprocess.run([tool("snakemake"), "--cores", "1"], cwd=project, capture_output=True, text=True,
                         env=stage_env(), timeout=60)
    seconds = time.perf_counter() - started
    assert out.returncode != 0
    assert expected in out.stdout + out.stderr
    assert seconds < 10, f"took {seconds:.1f} s"
    after = sorted(p.relative_to(project) for p in project.rglob("*")
                   if ".git" not in p.parts and ".snakemake" not in p.parts)
    assert after == [p for p in before if ".snakemake" not in p.parts]
    assert not (project / "mlflow.db").exists()


@pytest.mark.faults_bad_input
def test_stage_command_refuses_bad_params_before_work(tmp_path):
    project = project_copy(tmp_path / "p")
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace("seed: 0", "seed: -3"))
    out = subprocess.run([tool("python"), "-m", "pipeline.prepare_data"], cwd=project, capture_output=True,
                         text=True, env=stage_env(), timeout=120)
    assert out.returncode == 2
    assert "seed: -3 is less than the minimum of 0" in out.stderr
    assert not (project / "data" / "prepared").exists()
