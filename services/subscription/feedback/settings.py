"""``NEWSLETTER_FEEDBACK_*``: the thresholds of :class:`FeedbackPolicy`, read when it starts."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.subscription.feedback.policy import FeedbackPolicy


class FeedbackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEWSLETTER_FEEDBACK_", extra="ignore")

    soft_threshold: float = Field(default=3.0, gt=0)
    soft_stale_after_days: float = Field(default=21.0, gt=0)
    storm_threshold: int = Field(default=50, ge=1)
    storm_window_s: int = Field(default=3600, ge=60)
    storm_pause_s: int = Field(default=3600, ge=60)

    def policy(self) -> FeedbackPolicy:
        return FeedbackPolicy(
            soft_threshold=self.soft_threshold,
            soft_stale_after=timedelta(days=self.soft_stale_after_days),
            storm_threshold=self.storm_threshold,
            storm_window=timedelta(seconds=self.storm_window_s),
            storm_pause=timedelta(seconds=self.storm_pause_s),
        )


def load_feedback_policy(**overrides: object) -> FeedbackPolicy:
    return FeedbackSettings(**overrides).policy()  # type: ignore[arg-type]
