"""`python -m services.subscription`: start the subscription service."""

from services.subscription.cli import run_service

if __name__ == "__main__":
    run_service()
