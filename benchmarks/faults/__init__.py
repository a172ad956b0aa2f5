"""``newsletter bench faults``: issue 12's fault table, each scenario on its own broker and DB.

``drill`` runs one scenario (own RabbitMQ nodes, own PostgreSQL database, the recording SMTP
server of ``recording_smtp``, one real dispatcher process); ``scenarios`` lists the faults;
``cli`` prints the table.
"""
