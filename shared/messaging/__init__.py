"""AMQP contracts: the topology (declared in one place), message schemas and the publisher."""
