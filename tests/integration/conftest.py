"""The integration suite's fixtures (the session's Prefect API, the shared tiny pipeline run) live in
tests/conftest.py, which the reliability suite shares; the helpers are re-exported here for the tests."""

from tests.conftest import CODE, PROJECT_FILES, copy_project, make_checkout

__all__ = ["CODE", "PROJECT_FILES", "copy_project", "make_checkout"]
