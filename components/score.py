from kfp import dsl
from kfp.dsl import Dataset, Output

from components._images import EMBED_IMAGE


@dsl.component(base_image=EMBED_IMAGE, install_kfp_package=False)
def score_and_label(
    target_emb_uri: str,
    doc_emb_uri: str,
    doc_corpus_uri: str,
    target_corpus_uri: str,
    work_uri: str,
    name: str,
    top_k: int,
    aggregation: str,
    positive_pct: float,
    seed: int,
    device: str,
    summary: Output[Dataset],
    top_matches: Output[Dataset],
) -> str:
    """Rank sampled docs by similarity to every target example and label the top (SPEC §1.4–5).

    Returns the URI of the balanced labels file the classifier trains on.
    """
    from seedbed import store
    from seedbed.betr.score import score_and_label as run

    out_uri = store.join(work_uri, name)

    run(
        target_emb_uri,
        doc_emb_uri,
        doc_corpus_uri,
        out_uri,
        target_corpus=target_corpus_uri,
        top_k=top_k,
        aggregation=aggregation,
        positive_pct=positive_pct,
        seed=seed,
        device=device,
    )
    for art, fname in ((summary, "score.json"), (top_matches, "top_matches.json")):
        store.copy_to_path(store.join(out_uri, fname), art.path)
        art.metadata["uri"] = store.join(out_uri, fname)
    return store.join(out_uri, "labels.jsonl.gz")
