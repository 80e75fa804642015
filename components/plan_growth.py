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

    from seedbed.growth.series import parse_lr, write_plan
    from seedbed.params import csv_ints, csv_list

    doc = write_plan(
        work_uri, tokens_uri, csv_list(series_csv), json.loads(settings_json or "{}"),
        tokens=csv_ints(tokens_csv) or None, tokens_per_param=tokens_per_param, lr=parse_lr(lr),
        fixed_data=fixed_data, basis=basis, width=width, depth=depth,
    )
    print(doc["table"])
    return len(doc["plan"]["stages"])
