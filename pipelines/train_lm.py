"""``train-lm``: tokenize domain corpora, train a Llama on a mixture schedule, evaluate it (issue #3).

    tokenize domains ── write train config ── launch training ── evaluate
                                              (TrainJob on a       (held-out loss per domain
                                               cluster; torchrun    vs unigram, zero-shot
                                               locally)             multiple choice via lm-eval)

Every stage writes under ``work_uri/<stage>`` and is idempotent there: the tokenizer output and
a finished run are reused, an interrupted run resumes from its last complete checkpoint. KFP
caching is off (SPEC §6). ``run_settings`` holds the TrainConfig fields as JSON (mixture,
upsample window, preset, token budget, batch, ZeRO stage...), see docs/training.md.
"""

from kfp import dsl

from components.train_config import write_train_config
from components._images import TRAIN_IMAGE
from pipelines._common import PLATFORM, cluster_settings
from pipelines._tasks import evaluate_task, tokenize_task, train_task


@dsl.pipeline(
    name="train-lm",
    description="Tokenize domain corpora, train a Llama with DeepSpeed on a mixture schedule with an "
    "end-of-training upsampling window, and evaluate it (held-out loss, zero-shot multiple choice).",
)
def train_lm(
    work_uri: str,
    domains_json: str,
    run_settings: str,
    benchmarks_uri: str = "",
    tokenizer: str = "train",
    vocab_size: int = 8192,
    valid_fraction: float = 0.02,
    mode: str = "cluster",
    image: str = TRAIN_IMAGE,
    runtime: str = "torch-distributed",
    runtime_kind: str = "TrainingRuntime",
    nodes: int = 1,
    procs_per_node: int = 1,
    gpus_per_node: int = 1,
    cpu_per_node: str = "",
    memory_per_node: str = "",
    shm_size: str = "16Gi",
    node_selector_json: str = PLATFORM.gpu_node_selector_json,
    tolerations_json: str = PLATFORM.gpu_tolerations_json,
    train_timeout_s: int = 0,
    eval_tasks: str = "arc_easy,arc_challenge,openbookqa,sciq,piqa,hellaswag",
    eval_limit: int = 500,
    eval_seq_len: int = 0,
    eval_batch_size: int = 8,
    eval_device: str = "auto",
):
    """Train and evaluate one model.

    Args:
        work_uri: where every stage writes (local dir or s3://bucket/prefix); reruns resume here.
        domains_json: JSON object, domain name → corpus URI (jsonl(.gz/.zst) file, prefix, or seedbed corpus).
        run_settings: JSON object of TrainConfig fields (mixture, upsample, preset, total_tokens, ...).
        tokenizer: "train" (byte-level BPE of `vocab_size` on the domains) or a tokenizer.json URI / "olmo:gpt-neox-20b".
        mode: "cluster" (a Kubeflow Trainer TrainJob) or "local" (torchrun inside the launcher's pod/process).
        runtime / runtime_kind: the TrainJob's runtime: "TrainingRuntime" is the one of that name in the
            run's namespace (manifests/base: seedbed-train image, seedbed-trainer account), or
            "ClusterTrainingRuntime" for the Trainer's cluster-wide one.
        eval_tasks: comma-separated multiple-choice tasks; "none" skips them.
    """
    tok = tokenize_task(domains_json, work_uri, tokenizer, vocab_size, valid_fraction)
    cfg = cluster_settings(write_train_config(
        tokens_uri=tok.outputs["Output"], work_uri=work_uri, name="train", settings_json=run_settings,
    ), cpu="1", memory="2G").set_display_name("write train config")
    launch = dict(mode=mode, image=image, runtime=runtime, runtime_kind=runtime_kind, nodes=nodes,
                  procs_per_node=procs_per_node, gpus_per_node=gpus_per_node, cpu_per_node=cpu_per_node,
                  memory_per_node=memory_per_node, shm_size=shm_size, node_selector_json=node_selector_json,
                  tolerations_json=tolerations_json, timeout_s=train_timeout_s)
    run = train_task(cfg.output, "train (DeepSpeed)", launch)
    evaluation = dict(benchmarks_uri=benchmarks_uri, tasks_csv=eval_tasks, seq_len=eval_seq_len, limit=eval_limit,
                      batch_size=eval_batch_size, device=eval_device)
    evaluate_task(run.outputs["Output"], tok.outputs["Output"], work_uri, "eval", "evaluate", evaluation)
