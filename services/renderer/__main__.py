"""`python -m services.renderer`: start the renderer service."""

from services.renderer.cli import run_service

if __name__ == "__main__":
    run_service()
