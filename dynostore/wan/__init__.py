"""Sites across a simulated WAN: one Linux network namespace per site, joined by veth links through a router.

```
  this machine's namespace --veth-- hub (router, ip_forward) --veth-- core: etcd members + gateways
  (clients, tests, benchmarks)        |  |  |
                                      |  |  +--veth-- site 4: one container (+ its delay relay)
                                      |  +--veth-- etcd host 0: one etcd member (with ``etcd_hosts``)
                                      ...
```

With ``etcd_hosts=N``, the etcd members run each in a namespace of its own
instead of the core (``10.O.240+i.2``), so that one member can be cut off:
:meth:`Wan.etcd_down` takes its link down (nobody reaches it, as when its
machine's network fails), :meth:`Wan.etcd_isolate` drops only the packets
between it and the other members (nftables in the hub: the gateways still
reach it, but it has lost the cluster, as in a partition between sites).

Every server listens on its namespace's own address (``10.O.x.2``), never
on this machine's; this machine reaches them through its own veth link to
the hub and one route. Each site's link has its impairment: round-trip
delay, jitter and loss. Where the kernel has ``sch_netem``, that is ``tc
netem`` on both ends of the site's link (half the delay each). Where it does
not (probed once per topology), a small userspace relay in the site's
namespace, in front of its container, delays each direction of every TCP
connection by half the round trip (plus or minus half the jitter, order
kept); the container listens on the namespace's 127.0.0.1 and registers the
relay's address. Loss is then an approximation of what TCP makes of it
(bytes are never dropped): the line carries at most TCP's steady rate under
that loss, and a read with a lost packet holds the line up by a round trip,
or by the 200 ms retransmission timeout for short messages (see
:meth:`DelayLine.transmit`). The relay delays connections *to* the container (clients'
and the gateways' calls); the container's own calls out (its registration
heartbeats) go undelayed.

```python
from dynostore.wan import Site, Wan

with Wan([Site("a", rtt_ms=1), Site("b", rtt_ms=100)]) as wan, wan.fabric(k=1, m=1) as fabric:
    wan.impair("b", rtt_ms=300)  # slower
    wan.site_down("a")  # its links down: packets to it vanish
    wan.site_up("a")
```

```python
with Wan([Site("a")], etcd_hosts=3) as wan, wan.fabric(k=1, m=0, etcd_members=3) as fabric:
    wan.etcd_isolate(0)  # member 0 cut off from members 1 and 2; the gateways still reach it
    wan.etcd_rejoin(0)
```

Needs root (namespaces, links, routes): :func:`unavailable` says why not.
Everything is removed on exit, and on failure during start; namespaces are
named ``dw-PID-N-ROLE`` so that ``scripts/wan.py clean`` can remove those
of a process that died without cleaning up.

The parts: :mod:`dynostore.wan.topology` (the namespaces, links and routes,
and the fabric placed in them) and :mod:`dynostore.wan.relay` (the
userspace delay line, ``python -m dynostore.wan relay``).
"""

from dynostore.wan.relay import MIN_RTO, PACKET_BYTES, DelayLine, relay
from dynostore.wan.topology import CONTAINER_PORT, FIVE_SITES, Site, Wan, clean_leftovers, unavailable

__all__ = [
    "CONTAINER_PORT",
    "FIVE_SITES",
    "MIN_RTO",
    "PACKET_BYTES",
    "DelayLine",
    "Site",
    "Wan",
    "clean_leftovers",
    "relay",
    "unavailable",
]
