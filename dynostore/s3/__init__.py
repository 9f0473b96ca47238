"""The S3 front door: an S3 REST endpoint (``dynostore s3``) in front of a DynoStore fabric.

One module per stage: :mod:`.server` (the aiohttp process and routing),
:mod:`.auth` (SigV4 signatures and request bodies), :mod:`.store` (buckets
and objects mapped onto catalogs and fabric objects through the SDK),
:mod:`.buckets`, :mod:`.objects` and :mod:`.multipart` (the operations),
:mod:`.xml` (S3's XML documents) and :mod:`.errors` (S3's error codes).
See docs/s3.md.
"""
