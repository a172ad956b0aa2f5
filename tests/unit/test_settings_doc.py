"""docs/settings.md is generated from the settings classes and must match them."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings

from newsletter_cli.settings_doc import DOC_PATH, REPO_ROOT, collect, render_settings_doc
from services.bounces.settings import BouncesSettings
from services.dispatcher.settings import DispatcherSettings
from services.renderer.settings import RendererSettings
from services.subscription.policy import SignupPolicy
from shared.settings import Settings


def test_docs_settings_md_is_up_to_date() -> None:
    current = (REPO_ROOT / DOC_PATH).read_text(encoding="utf-8")
    assert current == render_settings_doc(), (
        "docs/settings.md is out of date: run `.venv/bin/newsletter settings-doc` and commit it"
    )


def test_every_field_of_every_settings_class_is_documented() -> None:
    text = render_settings_doc()
    classes: list[type[BaseSettings]] = [
        Settings,
        RendererSettings,
        DispatcherSettings,
        BouncesSettings,
        SignupPolicy,
    ]
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, info in cls.model_fields.items():
            env = (info.alias or f"{prefix}{name}").upper()
            assert f"| `{env}` |" in text, f"{cls.__name__}.{name} ({env}) missing"


def test_classes_are_found_by_reading_the_sources_not_from_a_list() -> None:
    found = {doc.cls.__name__ for doc in collect()}
    assert {"Settings", "RendererSettings", "FeedbackSettings", "QueueStatsSettings"} <= found


def test_each_class_says_which_processes_read_it() -> None:
    readers = {doc.cls.__name__: doc.readers for doc in collect()}
    assert readers["RendererSettings"] == ("renderer",)
    assert readers["BouncesSettings"] == ("bounces",)
    assert {"subscription", "renderer", "dispatcher", "bounces"} <= set(readers["Settings"])


def test_defaults_and_meanings_come_from_the_code() -> None:
    text = render_settings_doc()
    assert "| `NEWSLETTER_DISPATCH_PREFETCH` | `500` | Unacked issue jobs per process" in text
    assert "| `NEWSLETTER_SECRET_KEY` | *(empty)* |" in text
    assert "| `NEWSLETTER_ARCHIVE_URL` | *(empty)* | public base URL" in text


def test_the_readme_links_the_settings_page() -> None:
    assert "docs/settings.md" in (Path(REPO_ROOT) / "README.md").read_text(encoding="utf-8")
