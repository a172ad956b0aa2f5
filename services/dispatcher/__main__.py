"""`python -m services.dispatcher`: start the dispatcher service."""

from services.dispatcher.cli import run_service

if __name__ == "__main__":
    run_service()
