"""``python -m services.bounces``: the bounce receiver (``newsletter bounces serve``)."""

from services.bounces.cli import run_service

if __name__ == "__main__":
    run_service()
