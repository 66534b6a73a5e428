"""``streamrec dashboard``: one read-only page that shows the pipeline working, live.

:mod:`~streamrec.dashboard.readings` turns a worker's ``/metrics`` and ``/stats`` into one reading;
:mod:`~streamrec.dashboard.feeds` follows ``dead-letters``, ``item-embeddings`` and ``model-snapshots``;
:mod:`~streamrec.dashboard.collector` polls every worker, keeps bounded time series and answers the page's
questions; :mod:`~streamrec.dashboard.server` serves the page (plain HTML/JS with a vendored uPlot, no CDN)
and its GET-only JSON endpoints on loopback.
"""
