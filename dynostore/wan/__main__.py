"""``python -m dynostore.wan relay ...``: see :mod:`dynostore.wan.relay`."""

from dynostore.wan.relay import main

main()
