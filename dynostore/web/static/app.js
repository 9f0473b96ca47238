// DynoStore web UI: open a catalog, upload with a progress bar, evict, share and revoke,
// follow a catalog's events, refresh the fabric page.
"use strict";

const CHANGE = { "X-DynoStore-Request": "1" };

function openCatalog(form) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = new FormData(form).get("catalog");
    window.location.assign("/catalogs/" + encodeURIComponent(name));
  });
}

function upload(form) {
  const bar = form.querySelector("progress");
  const status = form.querySelector(".status");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = form.querySelector("input[type=file]").files[0];
    if (!file) return;
    const request = new XMLHttpRequest();
    const url = "/catalogs/" + encodeURIComponent(form.dataset.catalog) + "?name=" + encodeURIComponent(file.name);
    request.open("PUT", url);
    request.setRequestHeader("X-DynoStore-Request", "1");
    request.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total;
    });
    request.addEventListener("load", () => {
      if (request.status === 201) {
        window.location.reload();
      } else {
        bar.hidden = true;
        status.textContent = "Upload failed: " + request.responseText;
        status.className = "status error";
      }
    });
    request.addEventListener("error", () => {
      status.textContent = "Upload failed: the server could not be reached.";
      status.className = "status error";
    });
    bar.hidden = false;
    bar.value = 0;
    status.textContent = "Uploading " + file.name + "...";
    request.send(file);
  });
}

function evict(button) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    const reply = await fetch("/objects/" + button.dataset.key, { method: "DELETE", headers: CHANGE });
    if (reply.ok) {
      button.closest("tr").remove();
    } else {
      button.disabled = false;
      button.textContent = "Failed: " + (await reply.text());
    }
  });
}

function shareUrl(catalog, user) {
  return "/shares/" + encodeURIComponent(catalog) + "/" + encodeURIComponent(user);
}

function share(form) {
  const status = form.querySelector(".status");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = new FormData(form).get("user");
    const reply = await fetch(shareUrl(form.dataset.catalog, user), { method: "PUT", headers: CHANGE });
    if (reply.ok) {
      window.location.reload();
    } else {
      status.textContent = "Sharing failed: " + (await reply.text());
      status.className = "status error";
    }
  });
}

function unshare(button) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    const url = shareUrl(button.dataset.catalog, button.dataset.user);
    const reply = await fetch(url, { method: "DELETE", headers: CHANGE });
    if (reply.ok) {
      button.closest("li").remove();
    } else {
      button.disabled = false;
      button.textContent = "Failed: " + (await reply.text());
    }
  });
}

function cell(row, text) {
  row.insertCell().textContent = text;
}

function follow(table) {
  const status = document.querySelector("p.status");
  const source = new EventSource(table.dataset.stream);
  source.addEventListener("open", () => {
    status.textContent = "Following: new events appear at the top.";
  });
  source.addEventListener("message", (message) => {
    const event = JSON.parse(message.data);
    const row = table.insertRow(1);
    row.className = "event " + event.kind;
    cell(row, new Date(event.time * 1000).toLocaleTimeString());
    cell(row, String(event.revision));
    cell(row, event.kind);
    cell(row, event.kind === "share" || event.kind === "unshare" ? event.user : (event.name || event.key));
    cell(row, event.kind === "put" || event.kind === "replace" ? String(event.size) : "");
  });
  source.addEventListener("error", () => {
    status.textContent = "The stream was interrupted; reconnecting...";
  });
}

function refresh(live) {
  const every = 1000 * Number(live.dataset.seconds || 3);
  setInterval(async () => {
    try {
      const reply = await fetch(live.dataset.refresh, { cache: "no-store" });
      if (reply.ok) {
        // The server rendered and escaped this part, as it did the page itself.
        live.innerHTML = await reply.text();
        live.dataset.refreshed = String(Date.now());
      }
    } catch (error) {
      // the next round tries again
    }
  }, every);
}

document.querySelectorAll("#open-catalog").forEach(openCatalog);
document.querySelectorAll("#share").forEach(share);
document.querySelectorAll("button.unshare").forEach(unshare);
document.querySelectorAll("#events[data-stream]").forEach(follow);
document.querySelectorAll("#live[data-refresh]").forEach(refresh);
document.querySelectorAll("#upload").forEach(upload);
document.querySelectorAll("button.evict").forEach(evict);
