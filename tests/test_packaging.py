"""Packaging: pyproject.toml's pins agree with the requirements files, its console scripts name
functions that exist, the class-name files ship inside the package, the README's test command is
what CI runs, and no file puts anything on sys.path by hand."""

import importlib
import pathlib
import re
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _requirements(path: pathlib.Path) -> set:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return {line for line in lines if line}


def test_pins_agree_with_the_requirements_files():
    extras = PYPROJECT["optional-dependencies"]
    assert _requirements(REPO / "requirements.txt") == set(PYPROJECT["dependencies"]) | set(extras["test"])
    assert _requirements(REPO / "benchmarks" / "requirements-tpu.txt") == set(extras["tpu"])
    assert "torch" not in " ".join(PYPROJECT["dependencies"])  # torch is never a runtime dependency
    assert set(extras) == {"test", "notebook", "benchmark", "tpu"}


def test_console_scripts_name_the_python_m_entry_points():
    scripts = PYPROJECT["scripts"]
    assert set(scripts) == {"egoexo-train", "egoexo-convert", "egoexo-predict", "egoexo-precompute"}
    for target in scripts.values():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_class_name_files_ship_inside_the_package():
    from egoexo_jax import labels  # pylint: disable=import-outside-toplevel

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = REPO / "egoexo_jax"
    shipped = {p for pattern in globs["egoexo_jax"] for p in package.glob(pattern)}
    assert labels.DATA_DIR == package / "class_names"
    assert {labels.DATA_DIR / name for name, _ in labels.BUILTIN.values()} <= shipped


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    [test_command] = [c for c in commands if "pytest" in c]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").replace(" -q --disable-pip-version-check", "")
    for step in test_command.split("&&"):
        assert step.strip() in ci.splitlines(), step


def test_no_file_edits_sys_path():
    edits = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*(\+=|=[^=])")
    offenders = [
        str(p.relative_to(REPO))
        for p in REPO.rglob("*")
        if p.suffix in (".py", ".ipynb", ".sh", ".sbatch")
        and ".venv" not in p.parts
        and p.is_file()
        and edits.search(p.read_text(encoding="utf-8", errors="replace"))
    ]
    assert offenders == []
