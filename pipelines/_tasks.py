"""Tasks that several pipelines build the same way: one component call with its resources and
display name. The pipeline passes its own parameters in; nothing here reads the platform file
beyond ``cluster_settings``."""

from __future__ import annotations

from components.evaluate import evaluate_model
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
