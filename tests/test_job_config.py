"""The curate-and-grow config file: the shipped configs validate; every bad key is named, all at once."""

import copy
import json
from pathlib import Path

import pytest
import yaml
from conftest import run_cli as _run

from seedbed.job.config import ConfigError, check_params, read_config, to_params, with_domain

REPO = Path(__file__).resolve().parents[1]


def _full(raw: dict, base: Path = REPO / "configs") -> dict:
    """Pipeline defaults + what the config sets (what `seedbed run curate-and-grow` checks)."""
    import inspect

    from pipelines import registry

    sig = inspect.signature(registry()["curate-and-grow"].pipeline_func)
    return {k: v.default for k, v in sig.parameters.items() if v.default is not inspect.Parameter.empty} \
        | to_params(raw, base)


@pytest.fixture
def local():
    return read_config(str(REPO / "configs" / "local.yaml"))


def test_shipped_configs_validate(local):
    p = _full(local)
    plan = check_params(p)
    assert [s.preset for s in plan.stages] == ["tiny-64", "tiny-128"]
    assert p["work_uri"] == str((REPO / "runs" / "curate-and-grow").resolve())
    assert json.loads(p["domains_json"])["math"].endswith("shared/data/domains/math.jsonl.gz")
    assert json.loads(p["fasttext_params"]) == {"lr": 0.2, "epoch": 50, "minCount": 2}
    assert p["sweep_tokens"] == "8192,8192" and p["eval_tasks"] == "arc_easy,sciq,piqa,hellaswag"
    cluster = _full(read_config(str(REPO / "configs" / "cluster.yaml")))
    plan = check_params(cluster)
    assert [s.preset for s in plan.stages] == ["1b", "2b", "4b", "8b"] and cluster["work_uri"].startswith("s3://")


def test_every_problem_is_named_at_once(local):
    bad = copy.deepcopy(local)
    bad["trainng"] = {}
    bad["betr"]["keep_rte"] = 5
    bad["betr"]["sample_size"] = "many"
    bad["series"]["baselines"] = "yes"
    with pytest.raises(ConfigError) as e:
        to_params(bad, REPO / "configs")
    msg = str(e.value)
    for part in ("unknown section 'trainng'", "unknown key betr.keep_rte", "betr.sample_size: expected int, got 'many'",
                 "series.baselines: expected bool, got 'yes'"):
        assert part in msg, msg


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["betr"].update(domain="math"), "betr.domain 'math' is also a name in data.domains"),
    (lambda c: c["series"]["settings"].update(mixture={"math": 1.0}), "series.settings.mixture is set by the mixture fit"),
    (lambda c: c["sweep"].update(targets=["mean"], optimize_target="code_python"), "must be one of sweep.targets"),
    (lambda c: c["sweep"].update(domains=["math", "web"]), "sweep.domains names 'web'"),
    (lambda c: c["sweep"].update(min_weight=0.5), "sweep: min_weight 0.5 leaves no room"),
    (lambda c: c["series"].update(presets=["tiny-128", "tiny-64"]), "series: "),
    (lambda c: c["data"].update(domains={}), "data.domains: give at least one domain"),
])
def test_cross_field_checks(local, edit, message):
    c = copy.deepcopy(local)
    edit(c)
    with pytest.raises(ConfigError, match=None) as e:
        check_params(_full(c))
    assert message in str(e.value), str(e.value)


def test_with_domain_refuses_a_taken_name():
    assert json.loads(with_domain('{"a": "x"}', "b", "y")) == {"a": "x", "b": "y"}
    with pytest.raises(ConfigError, match="already"):
        with_domain('{"a": "x"}', "a", "y")


def test_cli_check_and_bad_configs(tmp_path, local):
    res = _run("run", "curate-and-grow", "--check")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["optimize_preset"] == "tiny-128"  # h* for the series' last model
    bad = copy.deepcopy(local)
    absolute = lambda u: str((REPO / "configs" / u).resolve())  # noqa: E731  (the file moves to tmp_path)
    bad["work"] = str(tmp_path / "work")
    bad["data"] = {"pool": [absolute(u) for u in bad["data"]["pool"]], "benchmarks": absolute(bad["data"]["benchmarks"]),
                   "domains": {"math": absolute(bad["data"]["domains"]["math"]),
                               "code_python": "/nonexistent/code.jsonl.gz"}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    res = _run("run", "curate-and-grow", "--config", str(path), "--check")
    assert res.returncode == 2 and "/nonexistent/code.jsonl.gz" in res.stderr, res.stderr[-2000:]
    path.write_text("work: [unclosed")
    res = _run("run", "curate-and-grow", "--config", str(path))
    assert res.returncode == 2 and "not valid YAML" in res.stderr
    res = _run("run", "curate-and-grow", "--config", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2 and "config file not found" in res.stderr


def test_report_of_an_unfinished_job_names_what_is_missing(tmp_path):
    """The final report reads what the stages left; with nothing there it says so, inventing nothing."""
    from seedbed.job.report import final_report

    s = final_report(str(tmp_path))
    md = (tmp_path / "summary" / "report.md").read_text()
    for part in ("the selection did not finish", "the mixture fit did not finish",
                 "the growth stages did not finish", "No evaluation results"):
        assert part in md, md
    assert s["selection"] == {} and s["mixture"] == {} and s["series"] == {} and s["evaluation"] == []
    assert json.loads((tmp_path / "summary" / "summary.json").read_text())["report_uri"] == s["report_uri"]


def test_comma_lists_strip_spaces_and_drop_empty_items():
    """One helper for every comma-separated parameter: "a, b" is ["a", "b"], not ["a", " b"]."""
    from seedbed import job, params

    assert params.csv_list("a, b ,,c,") == ["a", "b", "c"] and params.csv_list("") == []
    assert params.csv_ints(" 1e6, 2048 ,8192.0") == [1_000_000, 2048, 8192]
    assert params.csv_floats("3, 10,30.5") == [3.0, 10.0, 30.5]
    assert job.config.csv_list is params.csv_list and job.config.csv_ints is params.csv_ints
    # the components parse their comma-separated arguments with these helpers, never by hand
    by_hand = [p.name for p in (REPO / "components").glob("*.py") if 'split(",")' in p.read_text()]
    assert not by_hand, f"components splitting comma lists by hand: {by_hand}"
