// One session: its stages live (server-sent events), the video as soon as it plays, then
// chapters, transcript (searchable), summary and keywords; a click on a chapter or a line
// of the transcript moves the player there. Opened with ?t=SECONDS (a search hit), the
// player starts at that moment.
"use strict";

(function () {
  const sp = window.sessionpipe;
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const base = `/sessions/${encodeURIComponent(id)}`;
  const ENRICHMENT_STAGES = ["transcript", "chapters", "summary"];
  const FINISHED = ["succeeded", "failed", "cancelled", "skipped"];
  const player = document.getElementById("player");
  sp.events = 0; // status events received (the tests read these)
  sp.snapshot = null;
  sp.enrichment = null;
  let enrichmentKey = null;
  let pendingSeek = null;
  let source = null;
  const requested = parseFloat(new URLSearchParams(location.search).get("t"));
  let startAt = Number.isFinite(requested) && requested >= 0 ? requested : null;

  // -- the player ------------------------------------------------------------------------
  sp.seek = function seek(seconds) {
    if (!player.src || player.readyState < 1) {
      pendingSeek = seconds; // applied once the metadata is in
      return;
    }
    player.currentTime = seconds;
    player.play().catch(() => {});
  };
  player.addEventListener("loadedmetadata", () => {
    if (pendingSeek !== null) {
      const seconds = pendingSeek;
      pendingSeek = null;
      sp.seek(seconds);
    }
  });
  player.addEventListener("timeupdate", () => mark(player.currentTime));

  let shown = null; // "live" or "playable"
  sp.liveView = null;

  // While the session records (and until its MP4 exists): the live view, if the browser
  // can play it. The MP4 then takes over at the same moment of the recording.
  function showLive() {
    if (shown) return;
    sp.liveView = sp.startLive(player, base);
    if (!sp.liveView) return;
    shown = "live";
    player.hidden = false;
    document.getElementById("waiting").textContent = "Live: the recording so far.";
  }

  function showVideo() {
    if (shown === "playable") return;
    if (sp.liveView) {
      sp.liveView.stop();
      if (player.currentTime > 0) pendingSeek = player.currentTime;
      sp.liveView = null;
    }
    shown = "playable";
    player.src = `${base}/media/playable`;
    player.hidden = false;
    document.getElementById("waiting").hidden = true;
    if (startAt !== null) {
      sp.seek(startAt); // applied once the metadata is in
      startAt = null;
    }
  }

  function mark(t) {
    for (const item of document.querySelectorAll("#chapters li, #transcript li")) {
      const start = parseFloat(item.dataset.start);
      const end = parseFloat(item.dataset.end);
      item.classList.toggle("current", t >= start && t < end);
    }
  }

  // -- stages ----------------------------------------------------------------------------
  function renderStages(snapshot) {
    const list = document.getElementById("stages");
    list.replaceChildren(...snapshot.stages.map((s) => sp.stageBar(s)));
    const done = snapshot.stages.filter((s) => FINISHED.includes(s.status)).length;
    const indicator = document.getElementById("indicator");
    indicator.textContent = snapshot.outcome
      ? snapshot.outcome
      : `processing: ${done} of ${snapshot.stages.length} stages done`;
    indicator.dataset.state =
      snapshot.outcome === "failed" ? "failed" : snapshot.outcome ? "idle" : "busy";
    const status = snapshot.outcome || (snapshot.playable ? "playable" : snapshot.status);
    document.getElementById("subtitle").textContent = `${id} · ${status}`;
    document.body.dataset.outcome = snapshot.outcome || "";
    document.body.dataset.playable = String(snapshot.playable);
  }

  function renderDownloads(snapshot) {
    const box = document.getElementById("downloads");
    const links = [];
    const done = (stage) => snapshot.stages.some((s) => s.stage === stage && s.status === "succeeded");
    if (done("merge")) links.push(sp.el("a", { href: `${base}/media/playable`, download: "" }, "Download MP4"));
    if (done("compress")) links.push(sp.el("a", { href: `${base}/media/compressed`, download: "" }, "Download compressed copy"));
    box.replaceChildren(...links.flatMap((link, i) => (i ? [" · ", link] : [link])));
  }

  function apply(snapshot) {
    sp.snapshot = snapshot;
    renderStages(snapshot);
    renderDownloads(snapshot);
    if (snapshot.playable) showVideo();
    else if (!snapshot.outcome) showLive();
    // Read the enrichment again whenever one of its stages (or playability) changes.
    const key = JSON.stringify([
      snapshot.playable,
      snapshot.stages.filter((s) => ENRICHMENT_STAGES.includes(s.stage)).map((s) => s.status),
    ]);
    if (key !== enrichmentKey) {
      enrichmentKey = key;
      const anyDone = snapshot.stages.some(
        (s) => ENRICHMENT_STAGES.includes(s.stage) && FINISHED.includes(s.status)
      );
      if (anyDone || snapshot.outcome) loadEnrichment();
    }
  }

  // -- enrichment ------------------------------------------------------------------------
  async function loadEnrichment() {
    try {
      const { body } = await sp.api(`${base}/enrichment`);
      sp.enrichment = body;
      renderChapters(body.chapters || []);
      renderTranscript((body.transcript && body.transcript.segments) || []);
      renderSummary(body);
      const warnings = document.getElementById("warnings");
      warnings.replaceChildren(...(body.warnings || []).map((w) => sp.el("li", {}, w)));
    } catch (error) {
      sp.showError(error.message);
    }
  }

  function renderChapters(chapters) {
    document.getElementById("chapters-box").hidden = chapters.length === 0;
    document.getElementById("chapters").replaceChildren(
      ...chapters.map((chapter, i) =>
        sp.el(
          "li",
          { "data-start": chapter.start, "data-end": chapter.end },
          sp.el(
            "button",
            { type: "button", class: "chapter", onclick: () => sp.seek(chapter.start) },
            sp.el("span", { class: "time" }, sp.clock(chapter.start)),
            sp.el("span", { class: "title" }, chapter.title || `Chapter ${i + 1}`)
          ),
          chapter.keywords && chapter.keywords.length
            ? sp.el("div", { class: "muted small" }, chapter.keywords.join(", "))
            : null
        )
      )
    );
  }

  let segments = [];
  function renderTranscript(list) {
    segments = list;
    document.getElementById("transcript-box").hidden = list.length === 0;
    filterTranscript();
  }

  // The text with every occurrence of `query` (lower case) in a <mark>.
  function highlighted(text, query) {
    if (!query) return [text];
    const parts = [];
    const lower = text.toLowerCase();
    let at = 0;
    for (let hit = lower.indexOf(query); hit !== -1; hit = lower.indexOf(query, at)) {
      if (hit > at) parts.push(text.slice(at, hit));
      parts.push(sp.el("mark", {}, text.slice(hit, hit + query.length)));
      at = hit + query.length;
    }
    if (at < text.length) parts.push(text.slice(at));
    return parts;
  }

  function filterTranscript() {
    const query = document.getElementById("transcript-search").value.trim().toLowerCase();
    const shown = segments.filter((s) => !query || s.text.toLowerCase().includes(query));
    document.getElementById("transcript").replaceChildren(
      ...shown.map((segment) =>
        sp.el(
          "li",
          {
            "data-start": segment.start,
            "data-end": segment.end,
            onclick: () => sp.seek(segment.start),
          },
          sp.el("button", { type: "button", class: "time" }, sp.clock(segment.start)),
          sp.el("span", { class: "text" }, highlighted(segment.text.trim(), query))
        )
      )
    );
    document.getElementById("transcript-count").textContent = query
      ? `${shown.length} of ${segments.length} lines match`
      : "";
  }
  document.getElementById("transcript-search").addEventListener("input", filterTranscript);

  function renderSummary(document_) {
    const box = document.getElementById("summary-box");
    const keywords = document_.keywords || [];
    box.hidden = !document_.summary && keywords.length === 0;
    document.getElementById("summary").textContent = document_.summary || "";
    document.getElementById("keywords").replaceChildren(...keywords.map((k) => sp.el("li", {}, k)));
  }

  // -- start -----------------------------------------------------------------------------
  function listen() {
    source = new EventSource(`${base}/events`);
    source.addEventListener("status", (event) => {
      sp.events += 1;
      sp.lastEventAt = performance.timeOrigin + performance.now();
      apply(JSON.parse(event.data));
      sp.showError("");
    });
    source.addEventListener("deleted", () => {
      source.close();
      sp.showError("This session was deleted.");
    });
    source.onerror = () => {
      // The browser reconnects by itself (retry: in the stream); a 401 or 404 it does not.
      if (source.readyState === EventSource.CLOSED) sp.showError("Live updates stopped.");
    };
  }

  async function start() {
    try {
      const { body } = await sp.api(base);
      document.getElementById("title").textContent = body.name || id;
      document.title = `sessionpipe: ${body.name || id}`;
      apply({
        session_id: id,
        status: body.status,
        outcome: body.outcome,
        playable: body.playable,
        complete: body.complete,
        stages: body.stages,
      });
    } catch (error) {
      sp.showError(error.message);
      return;
    }
    listen();
  }
  start();
})();
