// DynoStore web UI: open a catalog, upload with a progress bar, evict.
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

document.querySelectorAll("#open-catalog").forEach(openCatalog);
document.querySelectorAll("#upload").forEach(upload);
document.querySelectorAll("button.evict").forEach(evict);
