"""Shared fixtures: the real scans in ../shared/data and the generated test series."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for tests/dicomgen.py
# the caches (PACS series, prepared segmentations) of a test run live in a folder of their own,
# never in the user's ~/.cache
if "PLANNER_CACHE" not in os.environ:
    import tempfile

    os.environ["PLANNER_CACHE"] = tempfile.mkdtemp(prefix="planner-test-cache-")

CHEST_CT = SHARED_DATA / "chest-ct" / "dicom"
ABDOMEN_CT = SHARED_DATA / "abdomen-ct-totalseg" / "ct.nii.gz"
ABDOMEN_SEG = SHARED_DATA / "abdomen-ct-totalseg" / "segmentations"
CT3SLICE = SHARED_DATA / "dicom-seg-ct3slice"


def require_tool(exe: str, package: str) -> str:
    """The path of a command-line tool a test uses as an independent checker. Skipped, saying
    which Debian package provides it, when it is missing; failed instead in CI
    (PLANNER_REQUIRE_TOOLS=1, where .ci/run installs it)."""
    import shutil

    path = shutil.which(exe)
    if path is None:
        if os.environ.get("PLANNER_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{exe} ({package}) is missing but PLANNER_REQUIRE_TOOLS=1 (CI installs it)")
        pytest.skip(f"{exe} not installed (Debian package {package}); .ci/run installs it")
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``shared_data`` skip with the reason when the real scans are absent.

    In CI (PLANNER_REQUIRE_SHARED_DATA=1) their absence is an error, never a skip.
    """
    if SHARED_DATA.is_dir():
        return
    if os.environ.get("PLANNER_REQUIRE_SHARED_DATA") == "1":
        raise pytest.UsageError(f"{SHARED_DATA} is missing but PLANNER_REQUIRE_SHARED_DATA=1 (CI)")
    skip = pytest.mark.skip(reason=f"real scans not found at {SHARED_DATA} (a user's clone without ../shared)")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_thorax():
    """The demo thorax CT, its true structures and its body mask, once per test process (read-only)."""
    from planner.anatomy import load_structures
    from planner.anatomy.autoseg import body_mask
    from planner.images import load_image

    ct = load_image(ROOT / "assets/demo/thorax/ct")
    return ct, load_structures(ROOT / "assets/demo/thorax/structures.nii.gz", ct), body_mask(ct)


@pytest.fixture(scope="session")
def chest_segmented():
    """The chest CT and its automatic segmentation, once per test process (about 20 s)."""
    from planner.anatomy import segment_ct
    from planner.images import load_image

    ct = load_image(CHEST_CT)
    return ct, segment_ct(ct)
