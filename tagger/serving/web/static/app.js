// tagger web app: progressive enhancement of server-rendered pages. No framework, no build step, no CDN.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

// Previews: one shared <audio> element; the server streams by track id with range requests.
function setupPreviews() {
  const player = document.getElementById("player");
  let current = null;
  document.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button.play");
    if (!btn) return;
    if (current === btn && !player.paused) {
      player.pause();
      return;
    }
    if (current) current.classList.remove("playing");
    current = btn;
    player.src = btn.dataset.src;
    // Start inside the track, where the music is, as previews usually do.
    player.addEventListener("loadedmetadata", () => {
      if (player.duration > 60) player.currentTime = player.duration * 0.3;
    }, { once: true });
    player.play().catch((err) => { btn.title = "cannot play: " + err.message; btn.classList.add("failed"); });
    btn.classList.add("playing");
  });
  player.addEventListener("pause", () => current && current.classList.remove("playing"));
  player.addEventListener("ended", () => current && current.classList.remove("playing"));
}

// Confidence bars: widths from data attributes (no inline styles under the CSP).
function setupBars() {
  for (const fill of document.querySelectorAll(".bar .fill")) {
    fill.style.width = (100 * Math.max(0, Math.min(1, parseFloat(fill.dataset.p)))).toFixed(1) + "%";
  }
}

// Corrections: POST JSON with the CSRF token; the server hands it to the single writer.
function setupCorrections() {
  for (const form of document.querySelectorAll("form.correct")) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const action = (ev.submitter && ev.submitter.value) || "set";
      const out = form.querySelector("output");
      const values = form.elements.values.value.split(",").map((v) => v.trim()).filter((v) => v);
      if (action === "set" && values.length === 0) {
        out.textContent = "type a value, or use Remove";
        return;
      }
      out.textContent = "writing…";
      form.classList.add("busy");
      try {
        const res = await fetch(`/api/v1/tracks/${form.dataset.track}/correct`, {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
          body: JSON.stringify({ field: form.dataset.field, action, values }),
        });
        const body = await res.json();
        if (res.status === 200) {
          out.textContent = action === "unlock" ? "tagger decides this field again" :
            "written to the file: " + (body.values.join(", ") || "(none)");
          const row = form.closest("tr");
          row.querySelector(".in-file").firstChild.textContent = body.values.join(", ") || "none";
          // After a correction the values are the user's: locked, or (unlocked) still theirs.
          row.querySelector(".lock").textContent = body.locked.includes(form.dataset.field.toUpperCase()) ?
            "yours, locked: no scan changes it" : (body.values.length ? "yours: unlocked, the field's policy applies" :
            "empty: tagger fills it when the models agree");
          form.querySelector('button[value="unlock"]').disabled =
            !body.locked.includes(form.dataset.field.toUpperCase());
        } else if (res.status === 202) {
          out.textContent = body.message;
        } else {
          out.textContent = "not written: " + (body.error || res.statusText);
        }
        form.dataset.status = String(res.status);
      } catch (err) {
        out.textContent = "not written: " + err.message;
      } finally {
        form.classList.remove("busy");
      }
    });
  }
}

// Taggram: labels over time, drawn on a canvas from /api/v1/tracks/<id>/taggram.
async function setupTaggram() {
  const box = document.querySelector(".taggram");
  if (!box) return;
  const state = box.querySelector(".state");
  let data;
  try {
    const res = await fetch(`/api/v1/tracks/${box.dataset.track}/taggram`);
    data = await res.json();
    if (!res.ok) throw new Error(data.error || res.statusText);
  } catch (err) {
    state.textContent = "no taggram: " + err.message;
    box.dataset.ready = "error";
    return;
  }
  const canvas = box.querySelector("canvas");
  const ctx = canvas.getContext("2d");
  const rows = data.labels.length;
  const cols = data.values.length ? data.values[0].length : 0;
  const left = 130, top = 4, bottom = 22;
  const w = canvas.width - left - 4, h = canvas.height - top - bottom;
  const rh = h / rows, cw = w / Math.max(cols, 1);
  ctx.font = "12px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  for (let r = 0; r < rows; r++) {
    ctx.fillStyle = "#333";
    ctx.textAlign = "right";
    ctx.fillText(data.labels[r], left - 6, top + (r + 0.5) * rh);
    for (let c = 0; c < cols; c++) {
      const v = data.values[r][c];
      ctx.fillStyle = `hsl(${220 - 200 * v}, 80%, ${95 - 55 * v}%)`;
      ctx.fillRect(left + c * cw, top + r * rh, Math.ceil(cw), Math.ceil(rh));
    }
  }
  ctx.fillStyle = "#555";
  ctx.textAlign = "center";
  const seconds = cols * data.hop_s;
  const step = seconds > 600 ? 120 : seconds > 120 ? 30 : 10;
  for (let t = 0; t <= seconds; t += step) {
    const x = left + (t / data.hop_s) * cw;
    ctx.fillText(`${Math.floor(t / 60)}:${String(Math.floor(t % 60)).padStart(2, "0")}`, x, canvas.height - 9);
  }
  state.textContent = `${data.model.split("@")[0]}: ${cols} windows, ${data.hop_s.toFixed(1)} s apart`;  // the version is on the model card
  box.dataset.ready = "yes";
}

// Status: refresh every two seconds while the page is open.
function setupStatus() {
  const box = document.getElementById("status");
  if (!box) return;
  const render = (s) => {
    const p = document.createElement("p");
    p.className = "state";
    if (s.running) {
      p.textContent = `The daemon is ${s.state} (pid ${s.pid}): ${s.analysed} analysed, ${s.written} written, ` +
        `${s.failed} failed; ${s.waiting} files settling, ${s.inbox} corrections waiting.`;
      box.replaceChildren(p);
      if (s.total && s.state !== "watching") {
        const bar = document.createElement("progress");
        bar.max = s.total;
        bar.value = Math.min(s.done, s.total);
        box.append(bar, ` ${s.done} of ${s.total}`);
      }
    } else {
      p.textContent = "The daemon is not running" + (s.lock_holder ? ` (pid ${s.lock_holder} holds the database).` :
        ". Corrections are applied by this server directly.");
      box.replaceChildren(p);
    }
    box.dataset.running = String(Boolean(s.running));
  };
  const tick = async () => {
    try {
      const res = await fetch(box.dataset.refresh);
      if (res.ok) render(await res.json());
    } catch (err) { /* the server may be restarting; try again */ }
  };
  setInterval(tick, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  setupPreviews();
  setupBars();
  setupCorrections();
  setupTaggram();
  setupStatus();
});
