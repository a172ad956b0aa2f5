"""``bench signups --profile``: py-spy's raw samples sorted into areas, as the report says."""

from __future__ import annotations

from pathlib import Path

from benchmarks.signup_profile import Profile

SITE = "/venv/lib/python3.11/site-packages"
ROOT = (
    'process 7:"python -m services.subscription";run (/usr/lib/python3.11/asyncio/runners.py:118)'
)
LINES = [
    # A log call inside the signup route: logging, not the route nor the framework around it.
    f"{ROOT};app ({SITE}/fastapi/routing.py:10);subscribe (/w/services/subscription/routes/"
    f"signup.py:5);info ({SITE}/structlog/stdlib.py:222);dumps (/usr/lib/python3.11/json/"
    "__init__.py:231) 3",
    # SQL under the group commit's writer.
    f"{ROOT};_write (/w/services/subscription/group_commit.py:224);execute ({SITE}/asyncpg/"
    "connection.py:377) 5",
    # The framework's own code.
    f"{ROOT};solve_dependencies ({SITE}/fastapi/dependencies/utils.py:795) 2",
    # The request-log middleware's own work counts as it; what runs inside it does not.
    f"{ROOT};__call__ (/w/services/subscription/request_log.py:35);uuid4 (/usr/lib/python3.11/"
    "uuid.py:723) 1",
    f"{ROOT};__call__ (/w/services/subscription/request_log.py:35);app ({SITE}/fastapi/"
    "routing.py:10);parse_qsl (/usr/lib/python3.11/urllib/parse.py:791) 4",
    "not a sample line",
]


def test_samples_go_to_the_innermost_specific_area(tmp_path: Path) -> None:
    raw = tmp_path / "samples.raw"
    raw.write_text("\n".join(LINES) + "\n")
    profile = Profile.read(raw)
    assert profile is not None
    assert profile.samples == 15
    assert dict(profile.areas) == {
        "logging (structlog, redaction, stdlib logging)": 3,
        "SQL (SQLAlchemy, asyncpg)": 5,
        "web framework (FastAPI, Starlette, pydantic)": 2,
        "request id and log line (request_log.py)": 1,
        "form parsing (multipart, urlencoded)": 4,
    }
    report = profile.report(cpu_ms_per_signup=1.5)
    assert "0.500 ms  33.3%  SQL (SQLAlchemy, asyncpg)" in report


def test_no_file_no_profile(tmp_path: Path) -> None:
    assert Profile.read(tmp_path / "absent.raw") is None
