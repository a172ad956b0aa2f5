"""The operators' page (``/admin``): filled in by the operations work."""

from fastapi import APIRouter

router = APIRouter()
