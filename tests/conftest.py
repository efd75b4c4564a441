"""Shared fixtures; every test process runs offline against its own fresh HF cache (see tests/fixtures/tinyrepo.py)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from dynamics.hubcache import repo_folder
from tests.fixtures.tinyrepo import TinyRepo, build_tinyrepo


def pytest_configure(config):
    # Runs before test modules are imported, hence before huggingface_hub reads these into its constants.
    hf_home = tempfile.mkdtemp(prefix="mdyn-test-hf-")
    saved = {name: os.environ.get(name) for name in ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE")}
    os.environ.update(HF_HUB_OFFLINE="1", HF_HOME=hf_home, HF_HUB_CACHE=os.path.join(hf_home, "hub"))

    def restore():
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(hf_home, ignore_errors=True)

    config.add_cleanup(restore)


@pytest.fixture(scope="session")
def tinyrepo() -> TinyRepo:
    """The tiny GPT-NeoX series in this process's offline HF cache; read only (evict from `tinyrepo_copy`)."""
    return build_tinyrepo(Path(os.environ["HF_HUB_CACHE"]))


@pytest.fixture
def tinyrepo_copy(tinyrepo, tmp_path) -> TinyRepo:
    """A private copy of the tiny series that a test may evict revisions from."""
    return tinyrepo.copy(tmp_path / "hub")


@pytest.fixture
def tiny_family(tinyrepo) -> list[str]:
    """Two repos in the session cache, `tiny/neox-sweep` and its copy `tiny/neox-twin`: a family for multi-model sweeps.

    The copy exists only during the test (tinyrepo itself stays untouched).
    """
    twin = repo_folder(tinyrepo.cache_dir, "tiny/neox-twin")
    shutil.copytree(repo_folder(tinyrepo.cache_dir, tinyrepo.repo_id), twin, symlinks=True)
    yield [tinyrepo.repo_id, "tiny/neox-twin"]
    shutil.rmtree(twin)


@pytest.fixture(autouse=True)
def _quiet_transformers():
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
