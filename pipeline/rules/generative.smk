# The generative defenses (issue 9): PixelDefend's PixelCNN, Defense-GAN's DCGAN, and both defenses
# under no attack, naive PGD and BPDA / EoT PGD. Only with generative.run.

GENERATIVE = config["generative"]["run"]


rule train_pixelcnn:
    input:
        code=dag.code_deps("train_pixelcnn"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
    output:
        model=P.PIXELCNN_MODEL,
        history=P.PIXELCNN_HISTORY,
        metrics=P.PIXELCNN_METRICS,
    params:
        values=lambda wc: dag.param_values(config, "train_pixelcnn"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.train_pixelcnn"


rule train_gan:
    input:
        code=dag.code_deps("train_gan"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
    output:
        model=P.GAN_MODEL,
        history=P.GAN_HISTORY,
        metrics=P.GAN_METRICS,
    params:
        values=lambda wc: dag.param_values(config, "train_gan"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.train_gan"


rule generative_defenses:
    input:
        code=dag.code_deps("generative_defenses"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        model=expand(P.MODEL, preset=PRESET, model=config["generative"]["model"]),
        pixelcnn=P.PIXELCNN_MODEL,
        gan=P.GAN_MODEL,
    output:
        table=P.GENERATIVE_TABLE,
        examples=P.GENERATIVE_EXAMPLES,
        metrics=P.GENERATIVE_METRICS,
    params:
        values=lambda wc: dag.param_values(config, "generative_defenses"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.generative_defenses"
