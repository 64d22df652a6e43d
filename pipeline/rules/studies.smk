# The papers' studies (issue 3): Madry et al.'s table, DeepFool's Tables 1-3 / Figures 6-7,
# Szegedy et al.'s transfer tables and units vs random directions.

MADRY_MODEL = config["madry_table"]["model"]
DF_MODELS = config["deepfool_study"]["models"]
TRANSFER_MODELS = [m["name"] for m in config["transfer"]["models"]]


rule train_copy:
    input:
        code=dag.code_deps("train_copy"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
    output:
        model=P.COPY_MODEL,
        metrics=P.COPY_TRAIN_METRICS,
        history=P.COPY_TRAIN_HISTORY,
    params:
        values=lambda wc: dag.param_values(config, "train_copy"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.train_copy"


rule madry_table:
    input:
        code=dag.code_deps("madry_table"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        models=expand(P.MODEL, preset=PRESET,
                      model=[MADRY_MODEL, config["madry_table"]["natural"], config["madry_table"]["other"]]),
        copy_model=expand(P.COPY_MODEL, preset=PRESET, model=MADRY_MODEL),
    output:
        table=P.MADRY_TABLE,
        metrics=P.MADRY_METRICS,
    params:
        values=lambda wc: dag.param_values(config, "madry_table"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.madry_table"


rule deepfool_study:
    input:
        code=dag.code_deps("deepfool_study"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        model=P.MODEL,
    output:
        metrics=P.DF_STUDY_METRICS,
        timing=P.DF_STUDY_TIMING,
        finetune=P.DF_FINETUNE,
    params:
        values=lambda wc: dag.param_values(config, "deepfool_study"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.deepfool_study --model {wildcards.model}"


rule train_transfer:
    input:
        code=dag.code_deps("train_transfer"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
    output:
        model=P.TRANSFER_MODEL,
        metrics=P.TRANSFER_TRAIN_METRICS,
        history=P.TRANSFER_TRAIN_HISTORY,
    params:
        values=lambda wc: dag.param_values(config, "train_transfer", tmodel=wc.tmodel),
    resources:
        gpu=LIGHT_GPU,
    threads: 1  # the stage pins one thread (run_stage(threads=1)) under Snakemake and DVC alike
    shell:
        "python -m pipeline.train_transfer --model {wildcards.tmodel}"


rule transfer:
    input:
        code=dag.code_deps("transfer"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        models=expand(P.TRANSFER_MODEL, preset=PRESET, tmodel=TRANSFER_MODELS),
        metrics=expand(P.TRANSFER_TRAIN_METRICS, preset=PRESET, tmodel=TRANSFER_MODELS),
    output:
        stats=P.TRANSFER_STATS,
        cross_model=P.TRANSFER_CROSS_MODEL,
        cross_training=P.TRANSFER_CROSS_TRAINING,
        metrics=P.TRANSFER_METRICS,
    params:
        values=lambda wc: dag.param_values(config, "transfer"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.transfer"


rule units:
    input:
        code=dag.code_deps("units"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        model=expand(P.MODEL, preset=PRESET, model=config["units"]["model"]),
    output:
        top=P.UNITS_TOP,
        metrics=P.UNITS_METRICS,
    params:
        values=lambda wc: dag.param_values(config, "units"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.units"
