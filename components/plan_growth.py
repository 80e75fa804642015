from kfp import dsl

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan_growth(
    tokens_uri: str,
    work_uri: str,
    series_csv: str,
    tokens_csv: str,
    tokens_per_param: float,
    lr: str,
    fixed_data: bool,
    basis: str,
    width: str,
    depth: str,
    settings_json: str,
) -> int:
    """Plan the growth series (SPEC §4) and write ``<work_uri>/plan.json``; returns the number of stages.

    ``tokens_csv``: explicit token targets per stage ("" = ``tokens_per_param`` × size);
    ``lr``: "preset" (by size), one number (fixed), or one per stage comma-separated.
    """
    import json

    from seedbed.growth.series import write_plan

    lrs = [float(x) for x in lr.split(",")] if lr not in ("", "preset") else None
    doc = write_plan(
        work_uri, tokens_uri, series_csv.split(","), json.loads(settings_json or "{}"),
        tokens=[int(float(t)) for t in tokens_csv.split(",")] if tokens_csv else None,
        tokens_per_param=tokens_per_param, lr=(lrs[0] if lrs and len(lrs) == 1 else lrs),
        fixed_data=fixed_data, basis=basis, width=width, depth=depth,
    )
    print(doc["table"])
    return len(doc["plan"]["stages"])
