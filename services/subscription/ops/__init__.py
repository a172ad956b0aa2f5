"""The ops page of the subscription service (``/admin``) and the queue readers behind it.

By concern:

- ``queue_snapshots.py``: what a queue reader returns (:class:`QueueStat`, rates);
- ``management_api.py``, ``rabbitmqctl.py``, ``passive_declares.py``: the three sources of
  queue figures; ``queue_reader.py`` picks one (also used by ``newsletter queues``);
- ``queue_metrics.py``: the queue gauges on ``/metrics``;
- ``dead_letters.py``: peeking at dead letters without taking them;
- ``read_models.py``: recent delivery errors, bounce and complaint rates (send progress is
  :mod:`shared.send_progress`, which the dispatcher's CLI shows too);
- ``state.py``: what the page keeps between requests and gathers for one view;
- ``views.py`` with ``templates/ops/``: the pages, in the reader's language;
- ``page_routes.py``, ``login_routes.py``: the HTTP routes.
"""
