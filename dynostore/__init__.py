"""DynoStore: a data fabric over storage at many sites, built on gRPC."""

__version__ = "0.1.0"
