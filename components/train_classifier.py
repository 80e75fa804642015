from kfp import dsl
from kfp.dsl import Dataset, Metrics, Model, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_classifier(
    labels_uri: str,
    work_uri: str,
    name: str,
    fasttext_params: str,
    heldout_frac: float,
    seed: int,
    model: Output[Model],
    metrics: Output[Metrics],
    metrics_json: Output[Dataset],
) -> str:
    """Train the fastText quality classifier on the embedding labels (SPEC §1.5); returns model URI.

    ``fasttext_params`` is a JSON object of overrides, e.g. '{"epoch": 10}'.
    """
    import json

    from seedbed import store
    from seedbed.betr.classifier import train_classifier as run

    out_uri = store.join(work_uri, name)

    params = json.loads(fasttext_params) if fasttext_params.strip() else {}
    result = run(labels_uri, out_uri, params=params, heldout_frac=heldout_frac, seed=seed)
    model_uri = store.join(out_uri, "model.bin")
    store.copy_to_path(model_uri, model.path)
    store.copy_to_path(store.join(out_uri, "metrics.json"), metrics_json.path)
    model.metadata.update({"uri": model_uri, "framework": "fasttext"})
    for key in ("accuracy", "precision", "recall", "f1", "n_train", "n_heldout"):
        if key in result:
            metrics.log_metric(key, float(result[key]))
    return model_uri
