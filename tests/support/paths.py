"""Where the tests' own files are, independent of how deep a test file sits in tests/."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures"  # data files the tests compare against (docs/metrics.md names one)
ARTIFACTS = TESTS / "artifacts"  # what the browser tests save for a person to look at (git-ignored)
