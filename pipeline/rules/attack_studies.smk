# The attack suite's studies (issue 4): Kurakin et al.'s fast / iterative / least-likely attacks,
# JSMA, Carlini-Wagner, one-pixel, the black-box substitute and the obfuscated-gradient defenses.

KURAKIN_MODELS = config["kurakin"]["models"]


rule kurakin:
    input:
        code=dag.code_deps("kurakin"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        model=P.MODEL,
    output:
        table=P.KURAKIN_TABLE,
        metrics=P.KURAKIN_METRICS,
    params:
        values=lambda wc: dag.param_values(config, "kurakin"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.kurakin --model {wildcards.model}"


rule train_thermometer:
    input:
        code=dag.code_deps("train_thermometer"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
    output:
        model=P.THERMO_MODEL,
        metrics=P.THERMO_METRICS,
        history=P.THERMO_HISTORY,
    params:
        values=lambda wc: dag.param_values(config, "train_thermometer"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.train_thermometer"


rule obfuscated:
    input:
        code=dag.code_deps("obfuscated"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        model=expand(P.MODEL, preset=PRESET, model=config["obfuscated"]["model"]),
        thermometer=P.THERMO_MODEL,
    output:
        table=P.OBFUSCATED_TABLE,
        metrics=P.OBFUSCATED_METRICS,
    params:
        values=lambda wc: dag.param_values(config, "obfuscated"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.obfuscated"


rule substitute:
    input:
        code=dag.code_deps("substitute"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        model=expand(P.MODEL, preset=PRESET, model=config["substitute"]["oracle"]),
    output:
        rounds=P.SUBSTITUTE_ROUNDS,
        sweep=P.SUBSTITUTE_SWEEP,
        metrics=P.SUBSTITUTE_METRICS,
    params:
        values=lambda wc: dag.param_values(config, "substitute"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.substitute"


rule cw_study:
    input:
        code=dag.code_deps("cw_study"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        model=P.MODEL,
    output:
        grids=P.CW_GRIDS,
        table=P.CW_TABLE,
        metrics=P.CW_METRICS,
        timing=P.CW_TIMING,
    params:
        values=lambda wc: dag.param_values(config, "cw_study"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.cw_study --model {wildcards.model}"


rule onepixel_study:
    input:
        code=dag.code_deps("onepixel_study"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        model=P.MODEL,
    output:
        table=P.ONEPIXEL_TABLE,
        metrics=P.ONEPIXEL_METRICS,
    params:
        values=lambda wc: dag.param_values(config, "onepixel_study"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.onepixel_study --model {wildcards.model}"


rule jsma_study:
    input:
        code=dag.code_deps("jsma_study"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        model=P.MODEL,
    output:
        table=P.JSMA_TABLE,
        metrics=P.JSMA_METRICS,
        timing=P.JSMA_TIMING,
    params:
        values=lambda wc: dag.param_values(config, "jsma_study"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.jsma_study --model {wildcards.model}"
