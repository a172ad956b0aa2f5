"""Applies bounce, complaint and mailto-unsubscribe events to subscribers."""
