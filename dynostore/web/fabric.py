"""The fabric pages of the web UI: the fabric at a glance (live) and one object's chunks as a picture."""

from __future__ import annotations

import html
import time
from collections import defaultdict
from urllib.parse import quote

from dynostore import validation
from dynostore.client.status import ContainerStatus, FabricStatus, RepairStatus
from dynostore.web.base import HandlerBase, human

# Seconds between two refreshes of the live fabric page.
FABRIC_REFRESH_SECONDS = 3


def _ago(moment: float, now: float) -> str:
    if not moment:
        return "never"
    seconds = max(now - moment, 0)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _bar(used: int, capacity: int) -> str:
    """A capacity bar: the used share of ``capacity``."""
    share = 100 * used / capacity if capacity else 0
    return (
        f'<div class="bar" title="{human(used)} used of {human(capacity)}">'
        f'<div class="fill" style="width:{share:.1f}%"></div></div>'
        f"<small>{human(capacity - used)} free of {human(capacity)}</small>"
    )


def _container_card(c: ContainerStatus, now: float) -> str:
    state = f"up since {_ago(c.registered, now)}" if c.up else f"down, last seen {_ago(c.last_seen, now)}"
    drain = ""
    if c.draining or c.drain.started:
        drain = (
            f'<br><small class="drain">{"DRAINING" if c.draining else "drain"}: {html.escape(c.drain.describe())}'
            "</small>"
        )
    return (
        f'<div class="container {"up" if c.up else "down"}" data-id="{html.escape(c.id)}">'
        f"<b>{html.escape(c.id)}</b> <span class=state>{'UP' if c.up else 'DOWN'}</span><br>"
        f"<small>{html.escape(c.backend)} · {html.escape(c.address)} · {state}</small>"
        f"{_bar(c.used_bytes, c.capacity_bytes)}"
        f"<br><small>{c.chunk_count} chunks · "
        f"{'scrubbed ' + _ago(c.last_scrub, now) if c.last_scrub else 'not scrubbed yet'}</small>{drain}</div>"
    )


def _repair(r: RepairStatus, now: float) -> str:
    if not r.started:
        return "<p>No repair sweep yet.</p>"
    found = f"{r.degraded_objects} degraded, {r.chunks_rebuilt} chunks rebuilt, {r.unrepaired_objects} not repaired"
    if r.running:
        total = max(r.objects_total, r.objects_checked, 1)
        return (
            f'<p id="repair">Sweep running on {html.escape(r.gateway)} since {_ago(r.started, now)}: '
            f'<progress max="{total}" value="{r.objects_checked}"></progress> '
            f"{r.objects_checked}/{total} objects; {found}</p>"
        )
    return (
        f'<p id="repair">Last sweep {_ago(r.finished, now)} by {html.escape(r.gateway)}: '
        f"{r.objects_checked} objects checked, {found}</p>"
    )


def fabric_html(status: FabricStatus, now: float) -> str:
    """The live part of the fabric page: summary, sites with their containers, etcd, gateways, repair."""
    sites: dict[str, list[ContainerStatus]] = defaultdict(list)
    for c in status.containers:
        sites[c.site or "-"].append(c)
    site_boxes = "".join(
        f'<section class="site"><h3>Site {html.escape(site)}</h3>'
        + "".join(_container_card(c, now) for c in containers)
        + "</section>"
        for site, containers in sorted(sites.items())
    )
    members = "".join(
        f"<li>{html.escape(m.endpoint)}: "
        + (("leader" if m.leader else "healthy") + f", db {human(m.db_size_bytes)}" if m.healthy else "")
        + (f'<span class="error">DOWN: {html.escape(m.error)}</span>' if not m.healthy else "")
        + "</li>"
        for m in status.etcd_members
    )
    gateways = "".join(
        f"<li>{html.escape(g.address)}, up since {_ago(g.started, now)} (version {html.escape(g.version)})</li>"
        for g in status.gateways
    )
    up = sum(c.up for c in status.containers)
    used = status.capacity_bytes - status.free_bytes
    return (
        f'<p id="summary" class="{"ok" if status.healthy else "error"}">'
        f"<b>{'Healthy' if status.healthy else 'Degraded'}</b>: {up}/{len(status.containers)} containers up, "
        f"{sum(m.healthy for m in status.etcd_members)}/{len(status.etcd_members)} etcd members healthy, "
        f"{status.objects} objects ({human(status.bytes)}), "
        f"{status.repair.degraded_objects} degraded at the last sweep.</p>"
        f"<h2>Capacity</h2>{_bar(used, status.capacity_bytes)}"
        f'<h2>Sites</h2><div class="sites">{site_boxes}</div>'
        f"<h2>Repair</h2>{_repair(status.repair, now)}"
        + (
            f'<p id="rebalance">Rebalance: {html.escape(status.rebalance.describe())}</p>'
            if status.rebalance.started
            else ""
        )
        + f"<h2>etcd members</h2><ul>{members}</ul><h2>Gateways</h2><ul>{gateways}</ul>"
    )


STYLE = """<style>
.sites { display: flex; flex-wrap: wrap; gap: .8rem; }
.site { border: 1px solid #bbb; border-radius: 6px; padding: .5rem; }
.site h3 { margin: 0 0 .4rem; font-size: 15px; } .container { border-radius: 4px; padding: .4rem; margin: .3rem 0;
 min-width: 15rem; } .container.up { background: #eef8ee; } .container.down { background: #f8e6e6; }
.bar { background: #ddd; height: .6rem; border-radius: 3px; margin: .3rem 0 .1rem; width: 100%; min-width: 10rem; }
.fill { background: #4a7; height: 100%; border-radius: 3px; } .ok { color: #060; }
.chunk { display: inline-block; padding: .1rem .4rem; margin: .1rem; border-radius: 3px; font-size: 12px; color: #fff; }
.chunk.stored { background: #393; } .chunk.missing { background: #b33; } .chunk.unreachable { background: #888; }
</style>"""


class FabricPages(HandlerBase):
    """The fabric at a glance, refreshed live, and where an object's chunks are."""

    def _fabric(self, rest: str, token: str) -> None:
        status = self.client.status(token_user=token)
        live = fabric_html(status, time.time())
        if "part=live" in self.path:  # what the page's script fetches to refresh itself
            self._send(200, live.encode(), "text/html; charset=utf-8", {"Cache-Control": "no-store"})
            return
        body = (
            f'{STYLE}<div id="live" data-refresh="/fabric?part=live" data-seconds="{FABRIC_REFRESH_SECONDS}">'
            f"{live}</div>"
        )
        self._page("Fabric", body, user=self.client.whoami(token_user=token))

    def _object(self, key: str, token: str) -> None:
        stat = self.client.stat(validation.key(key), token_user=token)
        info = stat.info
        where = f"{info.owner}/{info.catalog}"
        facts = (
            f"<table><tr><th>name</th><td>{html.escape(info.name or '-')}</td></tr>"
            f"<tr><th>key</th><td><code>{info.key}</code></td></tr>"
            f'<tr><th>catalog</th><td><a href="/catalogs/{quote(where, safe="")}">{html.escape(where)}</a></td></tr>'
            f"<tr><th>size</th><td>{human(info.size)} ({info.size} bytes)</td></tr>"
            f"<tr><th>created (UTC)</th><td>{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(info.created))}</td></tr>"
        )
        if stat.inline:
            body = facts + "<tr><th>stored</th><td>inline in the registry (etcd), no chunks</td></tr></table>"
            self._page(f"Object {info.name or info.key}", body, user=self.client.whoami(token_user=token))
            return
        facts += (
            f"<tr><th>policy</th><td>k={stat.k} data + m={stat.m} parity chunks: any {stat.k} of "
            f"{stat.k + stat.m} read it back</td></tr>"
            f"<tr><th>state</th><td>{'DEGRADED: repair rebuilds it' if stat.degraded else 'whole'}</td></tr></table>"
        )
        containers = {c.id: c for c in self.client.status(token_user=token).containers}
        by_container: dict[str, list[str]] = defaultdict(list)
        for chunk in stat.chunks:
            state = "stored" if chunk.stored and chunk.live else ("missing" if not chunk.stored else "unreachable")
            by_container[chunk.container_id].append(
                f'<span class="chunk {state}" title="chunk {chunk.index}: {state}">#{chunk.index}</span>'
            )
        sites: dict[str, list[str]] = defaultdict(list)
        for container_id, badges in by_container.items():
            known = containers.get(container_id)
            site = known.site if known else "?"
            up = "up" if known and known.up else "down"
            sites[site or "-"].append(
                f'<div class="container {up}" data-id="{html.escape(container_id)}"><b>{html.escape(container_id)}</b>'
                f" <small>{up}</small><br>{''.join(badges)}</div>"
            )
        picture = "".join(
            f'<section class="site"><h3>Site {html.escape(site)}</h3>{"".join(boxes)}</section>'
            for site, boxes in sorted(sites.items())
        )
        legend = (
            '<p><span class="chunk stored">stored</span> <span class="chunk unreachable">container down</span> '
            '<span class="chunk missing">missing (to be rebuilt)</span></p>'
        )
        body = f'{STYLE}{facts}<h2>Where its chunks are</h2>{legend}<div class="sites" id="chunks">{picture}</div>'
        self._page(f"Object {info.name or info.key}", body, user=self.client.whoami(token_user=token))
