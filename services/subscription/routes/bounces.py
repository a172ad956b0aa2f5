"""Admin API for bounce decisions and suppressions: filled in by the bounces work."""

from fastapi import APIRouter

router = APIRouter()
