"""KFP lightweight components: thin wrappers, one per file, that call the seedbed library.

Every component runs in the seedbed image (``components._images``), imports the library inside
its body (lightweight components ship only the function's source) and does no work of its own
beyond moving arguments and artifacts. Big data moves through the object store; the KFP
artifacts carry manifests, models, metrics and reports.
"""
