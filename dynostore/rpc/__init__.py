"""Shared gRPC plumbing: channel and server options, error mapping, health."""

from dynostore.rpc.channels import CHANNEL_OPTIONS, auth_metadata, open_channel
from dynostore.rpc.errors import ErrorMappingInterceptor, from_rpc_error
from dynostore.rpc.servers import start_server

__all__ = [
    "CHANNEL_OPTIONS",
    "ErrorMappingInterceptor",
    "auth_metadata",
    "from_rpc_error",
    "open_channel",
    "start_server",
]
