// What both pages share: building elements (data only ever as text), times, stage bars,
// the API's JSON, and the status indicator. No framework, no CDN: works offline.
"use strict";

const sp = (window.sessionpipe = window.sessionpipe || {});

// An element with attributes and children; strings become text nodes, never markup.
sp.el = function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
};

// A search hit's snippet: the words between « and » (GET /search marks them) in <mark>.
sp.marked = function marked(snippet) {
  const parts = [];
  for (const [k, piece] of String(snippet).split(/[«»]/).entries()) {
    if (piece) parts.push(k % 2 ? sp.el("mark", {}, piece) : piece);
  }
  return parts;
};

// 75.2 -> "1:15", 3675 -> "1:01:15".
sp.clock = function clock(seconds) {
  const total = Math.max(0, Math.floor(seconds || 0));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
};

sp.when = function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return isNaN(date) ? iso : date.toLocaleString();
};

// GET a JSON document of the API (the login cookie goes with it); errors say what failed.
sp.api = async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (response.status === 401) {
    throw new Error("Not logged in: open the link with ?token=… that sessionpipe printed.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    throw new Error((body && body.error) || `${path}: HTTP ${response.status}`);
  }
  return { body, response };
};

sp.showError = function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message || "";
  box.hidden = !message;
};

const LABELS = {
  concat_audio: "audio",
  merge: "video",
  compress: "compressed",
  finalize: "finish",
  transcript: "transcript",
  chapters: "chapters",
  summary: "summary",
  index: "search index",
};
sp.stageLabel = (stage) => LABELS[stage] || stage;

// One stage's bar: <li data-stage data-status> with a progressbar; updated in place.
sp.stageBar = function stageBar(stage, { compact = false } = {}) {
  const percent = Math.round(100 * (stage.status === "succeeded" ? 1 : stage.progress || 0));
  const fill = sp.el("span", { class: "fill" });
  fill.style.width = `${percent}%`;
  const state =
    stage.status === "running"
      ? `${percent}%`
      : stage.status + (stage.attempts > 1 ? ` (try ${stage.attempts})` : "");
  const item = sp.el(
    "li",
    {
      class: `stage s-${stage.status}`,
      "data-stage": stage.stage,
      "data-status": stage.status,
      "data-progress": percent,
      title: stage.error ? `${stage.stage}: ${stage.error}` : `${stage.stage}: ${state}`,
    },
    sp.el("span", { class: "name" }, sp.stageLabel(stage.stage)),
    sp.el(
      "span",
      {
        class: "bar",
        role: "progressbar",
        "aria-label": sp.stageLabel(stage.stage),
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": percent,
      },
      fill
    ),
    compact ? null : sp.el("span", { class: "state" }, state)
  );
  if (!compact && stage.error && stage.status !== "succeeded") {
    item.append(sp.el("span", { class: "stage-error" }, stage.error));
  }
  return item;
};

// The status indicator: what is going on, in a few words.
sp.indicate = function indicate(counts) {
  const node = document.getElementById("indicator");
  const parts = [];
  if (counts.processing) parts.push(`${counts.processing} processing`);
  if (counts.failed) parts.push(`${counts.failed} failed`);
  if (counts.complete) parts.push(`${counts.complete} complete`);
  node.textContent = parts.length ? parts.join(" · ") : "idle";
  node.dataset.state = counts.failed ? "failed" : counts.processing ? "busy" : "idle";
};
