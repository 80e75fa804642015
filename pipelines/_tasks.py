"""Tasks that several pipelines build the same way: one component call with its resources and
display name. The pipeline passes its own parameters in; nothing here reads the platform file
beyond ``cluster_settings``."""

from __future__ import annotations

from components.evaluate import evaluate_model
from components.launch_train import launch_training
from components.tokenize_domains import tokenize_domains
from pipelines._common import cluster_settings


def tokenize_task(domains_json, work_uri, tokenizer, vocab_size, valid_fraction):
    """Tokenize every domain into ``work_uri/tokens`` (a finished dataset is reused); the task's
    ``Output`` is the token dataset's URI."""
    return cluster_settings(tokenize_domains(
        domains_json=domains_json, work_uri=work_uri, name="tokens", tokenizer=tokenizer, vocab_size=vocab_size,
        valid_fraction=valid_fraction, overwrite=False,
    ), cpu="4", memory="16G").set_display_name("tokenize domains")


def evaluate_task(model_uri, tokens_uri, work_uri, name, label, evaluation: dict):
    """Evaluate one model into ``work_uri/name`` on a GPU (an empty ``model_uri`` evaluates nothing).
    ``evaluation``: evaluate_model's remaining arguments as the pipeline sets them (benchmarks_uri,
    tasks_csv, seq_len, limit, batch_size, device)."""
    return cluster_settings(evaluate_model(
        model_uri=model_uri, tokens_uri=tokens_uri, work_uri=work_uri, name=name, **evaluation,
    ), cpu="4", memory="16G", gpus=1).set_display_name(label)


def train_task(config_uri, label, launch: dict):
    """Train the TrainConfig at ``config_uri`` (a TrainJob on a cluster, torchrun in the launcher's pod
    with mode=local; an empty ``config_uri`` trains nothing). ``launch``: launch_training's remaining
    arguments as the pipeline sets them (mode, image, runtime, runtime_kind, nodes, procs_per_node,
    gpus_per_node, cpu_per_node, memory_per_node, shm_size, node_selector_json, tolerations_json,
    timeout_s). The launcher only watches the run, so its pod has no deadline of its own."""
    return cluster_settings(launch_training(config_uri=config_uri, **launch), cpu="2", memory="8G",
                            timeout_s=0).set_display_name(label)
