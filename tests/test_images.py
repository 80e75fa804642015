"""Static checks of images/ (no Docker engine needed).

- Each Dockerfile parses (a small parser: known instructions, line continuations, comments;
  heredocs and a non-backslash escape character are refused rather than half-understood).
- Base images are tagged (never `latest` or untagged); the Python in them satisfies
  requires-python.
- torch is installed at the version pyproject.toml pins, the CPU image from the PyTorch CPU
  index and the CUDA image not, before the project; the project itself and the --no-deps extras
  of scripts/env.sh are installed the same way in both images.
- The final stage runs as a numeric non-root user it creates, carries no compiler, copies the
  venv from the builder and runs offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE).
- The build context (the repo filtered by .dockerignore) keeps out .venv/.git/runs/out/caches,
  keeps what `pip install .` needs, and really builds a wheel holding the project's packages.
- components/_images.py (the single source of image references) agrees with images/README.md,
  the Dockerfile folders and the project version.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
DOCKERFILES = {"seedbed": IMAGES / "seedbed" / "Dockerfile", "seedbed-cuda": IMAGES / "seedbed-cuda" / "Dockerfile"}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
IMAGES_PY = REPO / "components" / "_images.py"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}
BUILD_TOOLS = {"gcc", "g++", "build-essential", "make", "cmake", "clang", "cc", "cpp"}

# ----------------------------------------------------------------------------- Dockerfile parser


class DockerfileError(ValueError):
    pass


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str  # the FROM reference with global ARG defaults substituted
    alias: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile, continuation lines joined and comments dropped."""
    lines = text.splitlines()
    for line in lines:  # parser directives come first, as `# directive=value`
        m = re.match(r"#\s*(\w+)\s*=\s*(\S+)\s*$", line)
        if not m:
            break
        if m.group(1).lower() == "escape" and m.group(2) != "\\":
            raise DockerfileError("only the default escape character (backslash) is supported")
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank and comment lines, also inside a continuation
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        logical = " ".join(p for p in buf if p)
        buf = []
        keyword, _, args = logical.partition(" ")
        if keyword.upper() not in INSTRUCTIONS:
            raise DockerfileError(f"line {start}: unknown instruction {keyword!r}")
        if re.search(r"<<-?\s*['\"]?\w+", args) and keyword.upper() in ("RUN", "COPY", "ADD"):
            raise DockerfileError(f"line {start}: heredocs are not supported by this checker")
        if not args.strip():
            raise DockerfileError(f"line {start}: {keyword} without arguments")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    if buf:
        raise DockerfileError("the file ends inside a line continuation")
    return out


def _substitute(s: str, args: dict[str, str]) -> str:
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in args:
            raise DockerfileError(f"${name} has no default")
        return args[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, s)


def stages(instructions: list[Instruction]) -> list[Stage]:
    """Build stages; FROM references get the global (pre-FROM) ARG defaults substituted."""
    global_args: dict[str, str] = {}
    out: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--platform")]
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            if len(words) not in (1, 3) or (len(words) == 3 and alias is None):
                raise DockerfileError(f"line {ins.line}: malformed FROM {ins.args!r}")
            out.append(Stage(_substitute(words[0], global_args), alias))
        elif not out:
            if ins.keyword != "ARG":
                raise DockerfileError(f"line {ins.line}: only ARG may come before the first FROM")
            name, _, default = ins.args.partition("=")
            global_args[name.strip()] = default.strip()
        else:
            out[-1].instructions.append(ins)
    if not out:
        raise DockerfileError("no FROM")
    return out


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage.all("ENV"):
        words = shlex.split(ins.args)
        if words and "=" not in words[0]:  # legacy `ENV KEY value with spaces`
            env[words[0]] = ins.args.split(None, 1)[1] if len(words) > 1 else ""
            continue
        for w in words:
            k, eq, v = w.partition("=")
            if not eq:
                raise DockerfileError(f"line {ins.line}: ENV word {w!r} is not KEY=VALUE")
            env[k] = v
    return env


def commands(run_args: str) -> list[list[str]]:
    """The simple commands of a shell-form RUN, split at unquoted `&&`, `||`, `;` and `|`."""
    lexer = shlex.shlex(run_args, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    for tok in lexer:
        if tok and set(tok) <= set(";&|"):
            out.append([])
        else:
            out[-1].append(tok)
    return [c for c in out if c]


def pip_installs(stage: Stage) -> list[list[str]]:
    """The argument lists of every `pip install` in the stage's RUN instructions, in order."""
    found = []
    for ins in stage.all("RUN"):
        for words in commands(ins.args):
            for i in range(len(words) - 1):
                if words[i].endswith("pip") and words[i + 1] == "install":
                    found.append(words[i + 2 :])
                    break
                if words[i : i + 4] == ["python", "-m", "pip", "install"] or words[i : i + 4] == ["python3", "-m", "pip", "install"]:
                    found.append(words[i + 4 :])
                    break
    return found


def _positional(args: list[str]) -> list[str]:
    """pip install arguments that name things to install (options and their values dropped)."""
    takes_value = {"--index-url", "-i", "--extra-index-url", "-c", "--constraint", "-r", "--requirement", "-f", "--find-links", "--target", "-t"}
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in takes_value:
            skip = True
        elif not a.startswith("-"):
            out.append(a)
    return out


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def image(request):
    name = request.param
    path = DOCKERFILES[name]
    assert path.is_file(), f"{path} is missing"
    return name, stages(parse_dockerfile(path.read_text()))


def _torch_pin() -> str:
    pins = [d for d in PYPROJECT["project"]["dependencies"] if re.match(r"torch\s*==", d)]
    assert len(pins) == 1, f"pyproject.toml should pin torch exactly once: {pins}"
    return re.sub(r"\s", "", pins[0])


def _final_and_builders(stage_list: list[Stage]) -> tuple[Stage, list[Stage]]:
    return stage_list[-1], stage_list[:-1]


# ----------------------------------------------------------------------------- Dockerfile tests


def test_parser_rejects_what_it_does_not_understand():
    with pytest.raises(DockerfileError, match="unknown instruction"):
        parse_dockerfile("FROM python:3.11-slim\nRUNN echo hi\n")
    with pytest.raises(DockerfileError, match="continuation"):
        parse_dockerfile("FROM python:3.11-slim\nRUN echo \\\n")
    with pytest.raises(DockerfileError, match="heredoc"):
        parse_dockerfile("FROM python:3.11-slim\nRUN <<EOF\necho hi\nEOF\n")
    with pytest.raises(DockerfileError, match="before the first FROM"):
        stages(parse_dockerfile("RUN echo hi\nFROM python:3.11-slim\n"))
    with pytest.raises(DockerfileError, match="no default"):
        stages(parse_dockerfile("FROM ${NOPE}\n"))
    ins = parse_dockerfile("# syntax=docker/dockerfile:1\nFROM x:1 AS b\n# c\nRUN a \\\n  # inner\n  && b\n")
    assert [(i.keyword, i.args) for i in ins] == [("FROM", "x:1 AS b"), ("RUN", "a && b")]


def test_dockerfile_parses_into_a_builder_and_a_final_stage(image):
    name, st = image
    assert len(st) >= 2, f"{name}: expected a multi-stage build (builder + final)"
    assert st[0].alias, f"{name}: the builder stage needs a name for COPY --from"


def test_base_images_are_tagged_not_latest(image):
    name, st = image
    aliases = set()
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    for s in st:
        if s.image in aliases:
            continue
        ref = s.image
        if "@sha256:" in ref:
            ref = ref.split("@", 1)[0]
            assert ref, f"{name}: {s.image}"
        else:
            last = ref.rsplit("/", 1)[-1]
            assert ":" in last, f"{name}: base image {s.image!r} has no tag (means latest)"
            assert last.split(":", 1)[1] != "latest", f"{name}: base image {s.image!r} uses latest"
        m = re.match(r"(?:docker\.io/(?:library/)?)?python:(\d+\.\d+)", s.image)
        assert m, f"{name}: base {s.image!r} is not an official python image"
        assert m.group(1) + ".0" in requires, f"{name}: Python {m.group(1)} does not satisfy requires-python {requires}"
        if s.alias:
            aliases.add(s.alias)


def test_torch_is_the_pinned_version_and_the_right_build(image):
    name, st = image
    pin = _torch_pin()
    _, builders = _final_and_builders(st)
    installs = [a for s in builders for a in pip_installs(s)]
    torch_installs = [a for a in installs if any(re.match(r"torch([=<>!~\[]|$)", w) for w in _positional(a))]
    assert len(torch_installs) == 1, f"{name}: torch should be installed in exactly one pip install: {torch_installs}"
    args = torch_installs[0]
    assert pin in _positional(args), f"{name}: torch install {args} does not pin {pin} (pyproject.toml)"
    index = args[args.index("--index-url") + 1] if "--index-url" in args else None
    if name == "seedbed":
        assert index == CPU_INDEX, f"{name}: the CPU image must take torch from {CPU_INDEX}, not {index}"
    else:
        assert index is None or "/whl/cpu" not in index, f"{name}: the CUDA image takes the CPU build of torch"
    # before the project: once torch==X is satisfied, the project's dependencies leave it alone
    assert installs.index(args) < min(i for i, a in enumerate(installs) if _project_target(a, st)), (
        f"{name}: torch must be installed before the project"
    )


def _copy_dests(st: list[Stage]) -> set[str]:
    """Destinations of `COPY . <dest>` (the whole build context) in the builder stages."""
    dests = set()
    for s in st[:-1]:
        for ins in s.all("COPY"):
            words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
            if words[:-1] == ["."]:
                dests.add(words[-1].rstrip("/") or "/")
    return dests


def _project_target(args: list[str], st: list[Stage]) -> bool:
    dests = _copy_dests(st)
    return any(p.rstrip("/") in dests or p in (".", "./") for p in _positional(args))


def test_project_is_installed_from_the_build_context(image):
    name, st = image
    dests = _copy_dests(st)
    assert dests, f"{name}: the builder never copies the build context (COPY . <dir>)"
    installs = [a for s in st[:-1] for a in pip_installs(s)]
    project = [a for a in installs if _project_target(a, st)]
    assert project, f"{name}: no `pip install <dir>` of the copied build context among {installs}"
    assert all("-e" not in a and "--editable" not in a for a in project), f"{name}: editable install in an image"
    for s in st:
        for ins in s.all("COPY") + s.all("ADD"):
            words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
            if any(w.startswith("--from") for w in shlex.split(ins.args)):
                continue
            for src in words[:-1]:
                if src != ".":
                    assert (REPO / src).exists(), f"{name}: COPY source {src} is not in the build context"
                    assert not dockerignored(src, _dockerignore()), f"{name}: COPY source {src} is excluded by .dockerignore"


def test_env_sh_extras_are_installed_too(image):
    """scripts/env.sh installs a few packages with --no-deps; the images must match the dev env."""
    name, st = image
    env_sh = (REPO / "scripts" / "env.sh").read_text()
    extras = re.findall(r'install\s+--no-deps\s+"?([A-Za-z0-9_.\-]+==[^\s"]+)"?', env_sh)
    installs = [a for s in st[:-1] for a in pip_installs(s)]
    for pkg in extras:
        assert any(pkg in _positional(a) and "--no-deps" in a for a in installs), f"{name}: does not install --no-deps {pkg} as scripts/env.sh does"


def test_both_images_install_the_project_the_same_way():
    # torch differs by build (CPU/CUDA); the CPU image also pre-builds DeepSpeed's CPU collective op
    def non_torch(path):
        st = stages(parse_dockerfile(path.read_text()))
        return [a for s in st[:-1] for a in pip_installs(s)
                if not any(w.startswith(("torch", "deepspeed")) for w in _positional(a))]

    assert non_torch(DOCKERFILES["seedbed"]) == non_torch(DOCKERFILES["seedbed-cuda"])


def test_cpu_image_prebuilds_deepspeeds_cpu_collective_op():
    text = DOCKERFILES["seedbed"].read_text()
    builder = stages(parse_dockerfile(text))[0]
    runs = " ".join(i.args for i in builder.all("RUN"))
    assert "DS_BUILD_SHM_COMM=1" in runs and "DS_ACCELERATOR=cpu" in runs and "g++" in runs
    assert "installed_ops as o; assert o['deepspeed_shm_comm']" in runs  # the build fails if the op is missing



def test_final_stage_is_non_root_offline_and_without_build_tools(image):
    name, st = image
    final, builders = _final_and_builders(st)
    assert final.image not in {s.alias for s in builders}, f"{name}: the final stage must start from a clean base, not a builder"
    users = final.all("USER")
    assert users, f"{name}: the final stage sets no USER (runs as root)"
    user = users[-1].args.split(":")[0]
    assert re.fullmatch(r"\d+", user), f"{name}: USER {user!r} is not numeric: runAsNonRoot cannot verify a name"
    assert int(user) != 0, f"{name}: USER is root"
    last_user_line = users[-1].line
    assert not [i for i in final.instructions if i.line > last_user_line and i.keyword == "USER"]
    runs = " ".join(i.args for i in final.all("RUN"))
    assert re.search(rf"useradd\b[^&;]*--uid {user}\b", runs), f"{name}: uid {user} is never created in the final stage"
    for ins in final.all("RUN"):
        for words in commands(ins.args):
            if "install" in words and any(w in ("apt-get", "apt", "apk", "yum", "dnf") for w in words):
                tools = BUILD_TOOLS & set(words)
                assert not tools, f"{name}: the final stage installs build tools {tools}"
    copies = [shlex.split(i.args) for i in final.all("COPY")]
    assert any(any(w.startswith("--from=") for w in c) and c[-1].rstrip("/") == "/opt/venv" for c in copies), (
        f"{name}: the final stage must take /opt/venv from the builder"
    )
    env = env_of(final)
    assert env.get("HF_HUB_OFFLINE") == "1" and env.get("TRANSFORMERS_OFFLINE") == "1", f"{name}: not offline by default: {env}"
    assert env.get("PATH", "").startswith("/opt/venv/bin:"), f"{name}: python3 must resolve to the venv (KFP runs `python3 -m ...`)"
    assert not final.all("ENTRYPOINT"), f"{name}: KFP overrides the command; an ENTRYPOINT would silently not run"


def test_cuda_image_does_not_expose_all_gpus():
    final = stages(parse_dockerfile(DOCKERFILES["seedbed-cuda"].read_text()))[-1]
    assert "NVIDIA_VISIBLE_DEVICES" not in env_of(final)


# ----------------------------------------------------------------------------- .dockerignore


def _dockerignore() -> list[tuple[bool, re.Pattern]]:
    path = REPO / ".dockerignore"
    assert path.is_file(), ".dockerignore is missing at the repository root (the build context)"
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rx, i = "", 0
        while i < len(pat):  # Docker's patternmatcher: ** any dirs, * and ? within one segment
            if pat.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pat.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pat[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pat[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pat[i]), i + 1
        rules.append((negate, re.compile(rx + r"\Z")))
    return rules


def dockerignored(rel: str, rules) -> bool:
    """Whether the build context leaves REL out (a pattern matching a parent dir excludes it)."""
    parts = Path(rel).parts
    excluded = False
    for negate, rx in rules:
        if any(rx.match("/".join(parts[:k])) for k in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_junk_out_and_the_project_in():
    rules = _dockerignore()
    for junk in [".venv/bin/python", ".git/HEAD", "runs/x/y.json", "out/z", "seedbed/__pycache__/a.cpython-311.pyc",
                 "seedbed.egg-info/PKG-INFO", "build/lib/seedbed/__init__.py", "dist/seedbed-0.1.0.whl", ".pytest_cache/v"]:
        assert dockerignored(junk, rules), f".dockerignore lets {junk} into the build context"
    keep = ["pyproject.toml", "seedbed/__init__.py", "components/_images.py", "pipelines/__init__.py", "scripts/env.sh"]
    readme = PYPROJECT["project"].get("readme")
    if isinstance(readme, str):
        keep.append(readme)
    for path in keep:
        assert not dockerignored(path, rules), f".dockerignore leaves out {path}, which `pip install .` needs"


def test_dockerignore_matcher_semantics():
    rules = [(False, re.compile(r"(?:.*/)?__pycache__\Z")), (False, re.compile(r"runs\Z"))]
    assert dockerignored("a/b/__pycache__/c.pyc", rules) and dockerignored("runs/a", rules)
    assert not dockerignored("seedbed/runs.py", rules) and not dockerignored("x/runs/a", rules)


def _context_copy(dest: Path) -> None:
    """Copy the repository as the Docker build context would see it."""
    rules = _dockerignore()
    for root, dirs, files in os.walk(REPO):
        rel_root = Path(root).relative_to(REPO)
        dirs[:] = [d for d in dirs if not dockerignored(str(rel_root / d), rules)]
        for f in files:
            rel = rel_root / f
            if not dockerignored(str(rel), rules):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, dest / rel)


def test_build_context_builds_a_wheel_with_the_project(tmp_path):
    """What `pip install /src` does in the builder, minus the network: build the project's wheel
    from the filtered build context and look inside."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    _context_copy(ctx)
    assert not (ctx / ".venv").exists() and not (ctx / ".git").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path / "dist"), str(ctx)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"building the project from the build context failed:\n{proc.stdout}\n{proc.stderr}"
    wheels = list((tmp_path / "dist").glob("seedbed-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    packages = [p.name for p in REPO.iterdir() if p.name in ("seedbed", "components", "pipelines") and (p / "__init__.py").is_file()]
    assert "seedbed" in packages
    for pkg in packages:
        assert f"{pkg}/__init__.py" in names, f"the wheel built from the build context lacks {pkg}/"
    if IMAGES_PY.is_file():
        assert "components/_images.py" in names


# ----------------------------------------------------------------------------- image references


def _load_images_module(monkeypatch, **env):
    assert IMAGES_PY.is_file(), "components/_images.py is where components read their images from"
    for var in ("SEEDBED_IMAGE", "SEEDBED_GPU_IMAGE"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    spec = importlib.util.spec_from_file_location("_seedbed_images_under_test", IMAGES_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_image_references_match_readme_dockerfiles_and_version(monkeypatch):
    mod = _load_images_module(monkeypatch)
    readme = (IMAGES / "README.md").read_text()
    version = PYPROJECT["project"]["version"]
    for const, folder in (("BASE_IMAGE", "seedbed"), ("GPU_IMAGE", "seedbed-cuda")):
        ref = getattr(mod, const)
        assert f"`{ref}`" in readme, f"images/README.md does not name {const} = {ref}"
        repo, _, tag = ref.rpartition(":")
        assert repo.rsplit("/", 1)[-1] == folder, f"{const} = {ref} is not built from images/{folder}/"
        assert (IMAGES / folder / "Dockerfile").is_file()
        assert tag == version, f"{const} = {ref}: tag {tag} != project version {version}"
        assert f"docker build -f images/{folder}/Dockerfile" in readme, f"images/README.md lacks the build command for {folder}"
    assert "SEEDBED_IMAGE" in readme and "SEEDBED_GPU_IMAGE" in readme


def test_image_references_follow_the_environment(monkeypatch):
    mod = _load_images_module(monkeypatch, SEEDBED_IMAGE="r.example/x/seedbed:9", SEEDBED_GPU_IMAGE="r.example/x/seedbed-cuda:9")
    assert (mod.BASE_IMAGE, mod.GPU_IMAGE) == ("r.example/x/seedbed:9", "r.example/x/seedbed-cuda:9")
