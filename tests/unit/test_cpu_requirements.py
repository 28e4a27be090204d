"""The images are CPU images: no CUDA library is pinned into them.

The real ``resolve_requirements`` runs against a temporary environment: a folder with the
``.dist-info`` records pip writes, as the only site directory on ``sys.path``. That stands
in for a machine where PyPI's ``xgboost`` (which pulls ``nvidia-nccl-cu12``, 469 MB) is
installed, without downloading it. The Docker test in tests/integration/test_cpu_image.py
builds a real xgboost notebook.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import write_notebook

from nb2prod.build.notebook import read_notebook
from nb2prod.build.requirements import resolve_requirements
from nb2prod.models import NotebookSpec


def install_record(site: Path, distribution: str, version: str, top_level: str) -> None:
    """What pip leaves for an installed distribution: its package and its dist-info."""
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
    )
    (info / "top_level.txt").write_text(f"{top_level}\n")
    (site / top_level).mkdir(exist_ok=True)
    (site / top_level / "__init__.py").touch()


def xgboost_notebook(tmp_path: Path, nvidia: bool = True) -> NotebookSpec:
    """A notebook training with xgboost (and, to reach the guard, reading an nvidia module)."""
    imports, reads = ("\nimport nvidia.nccl", "\nnccl = nvidia.nccl") if nvidia else ("", "")
    path = write_notebook(
        tmp_path / "nb" / "boosted.ipynb",
        [
            (f"import xgboost{imports}", []),
            (f"model = xgboost.XGBClassifier(){reads}", ["train"]),
            ("def predict(model, features):\n    return model.predict(features)", ["predict"]),
        ],
    )
    return read_notebook(path)


def resolve_in(site: Path, spec: NotebookSpec, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """resolve_requirements with ``site`` as the only installed packages (stdlib aside)."""
    notices: list[str] = []
    stdlib = [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]]
    with monkeypatch.context() as patched:
        patched.setattr(sys, "path", [str(site), *stdlib])
        pins = resolve_requirements(spec, notices)
    return {pin.distribution: pin.version for pin in pins}, notices


def resolve_with_pypi_xgboost(
    version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str | None], list[str]]:
    """The pins of an xgboost notebook where PyPI's xgboost ``version`` and its CUDA library
    (nvidia-nccl-cu12) are what is installed."""
    site = tmp_path / "site-packages"
    install_record(site, "xgboost", version, "xgboost")
    install_record(site, "nvidia-nccl-cu12", "2.21.5", "nvidia")
    return resolve_in(site, xgboost_notebook(tmp_path), monkeypatch)


def test_pypi_xgboost_is_pinned_as_its_cpu_build_and_no_nvidia_library_is_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pins, notices = resolve_with_pypi_xgboost("2.1.4", tmp_path, monkeypatch)

    assert pins["xgboost-cpu"] == "2.1.4"
    assert "xgboost" not in pins
    assert not [name for name in pins if name.lower().startswith("nvidia")]
    assert any("xgboost-cpu==2.1.4" in notice for notice in notices)
    assert any("nvidia-nccl-cu12 is a CUDA library" in notice for notice in notices)


def test_an_xgboost_older_than_its_cpu_build_keeps_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # xgboost-cpu was first published for 2.1.0: there is no xgboost-cpu==1.7.6 to install.
    pins, _ = resolve_with_pypi_xgboost("1.7.6", tmp_path, monkeypatch)

    assert pins["xgboost"] == "1.7.6" and "xgboost-cpu" not in pins


def test_where_the_cpu_build_is_installed_it_is_pinned_as_it_is(tmp_path: Path) -> None:
    # This environment has xgboost-cpu (a test extra), as a CPU-only machine would.
    pins = {
        pin.distribution: pin
        for pin in resolve_requirements(xgboost_notebook(tmp_path, nvidia=False))
    }
    assert "xgboost-cpu" in pins and "xgboost" not in pins
