"""An embedded local fabric: real etcd, gateways and containers as subprocesses.

```python
from dynostore.local import LocalFabric

with LocalFabric(containers=5, root="/tmp/fabric") as fabric:
    token = fabric.create_user("alice")
    ...  # Client(fabric.gateway)
```

Everything runs on free 127.0.0.1 ports (a :class:`Placement` runs the core,
or a container, elsewhere: :mod:`dynostore.wan` puts each in a network
namespace of its own). Starting again on the same ``root``
finds every earlier object: etcd data, chunks, container ids and the admin
token live under it.

Every process is a handle to stop, kill and start again, for failure tests:
``fabric.containers``, ``fabric.gateways`` and ``fabric.etcd_members``. A
gateway or etcd member comes back at the same address (its ports are picked
once, when the fabric starts), so clients, containers and the gateway find
it again on their own:

An etcd cluster and several gateways: ``LocalFabric(etcd_members=3,
gateways=2)``; every gateway reaches every member, and the containers and
``fabric.client()`` use every gateway.

```python
fabric.gateways[0].kill()  # SIGKILL; .stop() is SIGTERM
fabric.gateways[0].start()  # same address, waits until it answers
assert fabric.gateways[0].address == fabric.gateway
```

A mixed fabric takes a list of container specs instead of a count; each
container then runs from a settings file written under ``root/run``:

```python
LocalFabric(containers=[
    ContainerSpec(site="hpc"),  # file system under root
    ContainerSpec("s3", site="cloud", settings={"s3_bucket": "b", "s3_endpoint": "http://..."}),
    ContainerSpec("rados", site="ceph", settings={"rados_pool": "p", "ceph_conf": "/etc/ceph/ceph.conf"}),
])
```
"""

from dynostore.local.config import ContainerSpec, FabricConfig, load_fabric_config
from dynostore.local.fabric import LocalFabric
from dynostore.local.handles import ContainerHandle, EtcdHandle, GatewayHandle, S3Handle
from dynostore.local.processes import ManagedProcess, PinnedHandle, Placement, etcd_binary, free_port

__all__ = [
    "ContainerHandle",
    "ContainerSpec",
    "EtcdHandle",
    "FabricConfig",
    "GatewayHandle",
    "LocalFabric",
    "ManagedProcess",
    "PinnedHandle",
    "Placement",
    "S3Handle",
    "etcd_binary",
    "free_port",
    "load_fabric_config",
]
