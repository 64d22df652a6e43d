# Moosavi-Dezfooli et al. 2017 and the "UAPs and adversarial training" study (issue 6): a universal
# perturbation per model with its baselines, then the study across models.


rule uap:
    input:
        code=dag.code_deps("uap"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        model=P.MODEL,
    output:
        perturbations=P.UAP_PERTURBATIONS,
        table=P.UAP_TABLE,
        curve=P.UAP_CURVE,
        labels=P.UAP_LABELS,
        spectrum=P.UAP_SPECTRUM,
        metrics=P.UAP_METRICS,
        timing=P.UAP_TIMING,
    params:
        values=lambda wc: dag.param_values(config, "uap"),
    resources:
        gpu=LIGHT_GPU,
    threads: 1  # the stage pins one thread (run_stage(threads=1)) under Snakemake and DVC alike
    shell:
        "python -m pipeline.uap --model {wildcards.model}"


_UAP_STUDY = config["uap_study"]
_UAP_STUDY_MODELS = list(dict.fromkeys(_UAP_STUDY["cross"] + [_UAP_STUDY["natural"], _UAP_STUDY["robust"],
                                                              _UAP_STUDY["finetune"]["model"]]))


rule uap_study:
    input:
        code=dag.code_deps("uap_study"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        models=expand(P.MODEL, preset=PRESET, model=_UAP_STUDY_MODELS),
        uaps=expand(P.UAP_PERTURBATIONS, preset=PRESET, model=_UAP_STUDY["cross"]),
    output:
        cross=P.UAP_CROSS,
        finetune=P.UAP_FINETUNE,
        trajectories=P.UAP_TRAJECTORY,
        metrics=P.UAP_STUDY_METRICS,
        timing=P.UAP_STUDY_TIMING,
    params:
        values=lambda wc: dag.param_values(config, "uap_study"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.uap_study"
