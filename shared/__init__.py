"""Code shared by the three services: settings, logging, database tables and AMQP contracts.

Services import from here and never from each other.
"""
