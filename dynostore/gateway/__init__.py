"""The gateway: control path of the fabric (auth, metadata, placement, membership)."""
