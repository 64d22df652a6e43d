rule train:
    input:
        code=dag.code_deps("train"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
    output:
        model=P.MODEL,
        metrics=P.TRAIN_METRICS,
        history=P.TRAIN_HISTORY,
    wildcard_constraints:
        model=r"[a-z][a-z0-9_]*",  # natural models only; <arch>-<defense> comes from train_defense
    params:
        values=lambda wc: dag.param_values(config, "train"),
    resources:
        gpu=train_gpus("train"),
    # All cores for one torch job: float results depend on the thread count, and DVC runs each
    # stage with every core, so this keeps Snakemake's and DVC's outputs bit-identical.
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.train --model {wildcards.model}"


rule train_defense:
    input:
        code=dag.code_deps("train_defense"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
    output:
        model=P.DEFENDED_MODEL,
        metrics=P.DEFENDED_TRAIN_METRICS,
        history=P.DEFENDED_TRAIN_HISTORY,
    params:
        values=lambda wc: dag.param_values(config, "train_defense", defense=wc.defense),
    resources:
        gpu=train_gpus("train_defense"),
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.train_defense --defense {wildcards.defense} --model {wildcards.arch}"
