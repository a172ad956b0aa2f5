"""``python -m services.dispatcher.bounces``: the bounce receiver (``newsletter bounces serve``)."""

from services.dispatcher.bounces.cli import run_service

if __name__ == "__main__":
    run_service()
