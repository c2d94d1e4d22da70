// The sessions, newest first, with a live bar per stage: the list is read again every
// POLL_MS while the page is open (one small query; the session page streams instead).
// The search box asks GET /search as one types (after TYPING_MS of quiet) or on Enter; each
// hit opens its session's page with the player at the moment (?t=seconds).
"use strict";

(function () {
  const sp = window.sessionpipe;
  const POLL_MS = 1500;
  const PAGE_SIZE = 50;
  const params = new URLSearchParams(location.search);
  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  sp.polls = 0;

  function row(session) {
    const state = session.outcome || (session.playable ? "playable" : session.status);
    const link = sp.el(
      "a",
      { href: `/ui/sessions/${encodeURIComponent(session.session_id)}` },
      session.name || session.session_id
    );
    return sp.el(
      "tr",
      { "data-session": session.session_id, "data-outcome": session.outcome || "" },
      sp.el("td", {}, link, sp.el("div", { class: "muted small" }, session.session_id)),
      sp.el("td", {}, sp.el("span", { class: `badge b-${state}` }, state)),
      sp.el(
        "td",
        {},
        sp.el("ul", { class: "stages compact" }, (session.stages || []).map((s) => sp.stageBar(s, { compact: true })))
      ),
      sp.el("td", { class: "small" }, sp.when(session.created_at))
    );
  }

  function pager(more) {
    const newer = document.getElementById("newer");
    const older = document.getElementById("older");
    newer.hidden = offset === 0;
    newer.href = `?offset=${Math.max(0, offset - PAGE_SIZE)}`;
    older.hidden = !more;
    older.href = `?offset=${offset + PAGE_SIZE}`;
  }

  async function refresh() {
    try {
      const { body, response } = await sp.api(`/sessions?limit=${PAGE_SIZE}&offset=${offset}`);
      const tbody = document.querySelector("#sessions tbody");
      tbody.replaceChildren(...body.map(row));
      document.getElementById("empty").hidden = body.length > 0 || offset > 0;
      pager(Boolean(response.headers.get("Link")));
      sp.indicate({
        processing: body.filter((s) => !s.outcome).length,
        failed: body.filter((s) => s.outcome === "failed").length,
        complete: body.filter((s) => s.outcome === "completed").length,
      });
      sp.showError("");
      sp.polls += 1;
    } catch (error) {
      sp.showError(error.message);
    }
  }

  // -- search ----------------------------------------------------------------------------
  const TYPING_MS = 300;
  const HITS = 20;
  const input = document.getElementById("search-input");
  const hitList = document.getElementById("hits");
  const status = document.getElementById("search-status");
  let typing = null;
  let asked = 0; // answers to older questions are dropped

  function hit(h) {
    const at = `/ui/sessions/${encodeURIComponent(h.session_id)}?t=${h.start}`;
    return sp.el(
      "li",
      { class: "hit", "data-session": h.session_id, "data-start": h.start, "data-kind": h.kind },
      sp.el(
        "a",
        { href: at },
        sp.el("span", { class: "time" }, sp.clock(h.start)),
        " ",
        sp.el("span", { class: `badge k-${h.kind}` }, h.kind),
        " ",
        sp.el("span", { class: "session" }, h.session_id)
      ),
      sp.el("div", { class: "snippet" }, sp.marked(h.text))
    );
  }

  async function find() {
    const query = input.value.trim();
    const mine = ++asked;
    if (!query) {
      hitList.hidden = status.hidden = true;
      return;
    }
    try {
      const { body } = await sp.api(`/search?q=${encodeURIComponent(query)}&limit=${HITS}`);
      if (mine !== asked) return;
      hitList.replaceChildren(...body.hits.map(hit));
      hitList.hidden = body.hits.length === 0;
      status.textContent = body.hits.length
        ? `${body.hits.length} moment${body.hits.length === 1 ? "" : "s"}`
        : "Nothing found.";
    } catch (error) {
      if (mine !== asked) return;
      hitList.hidden = true;
      status.textContent = error.message; // e.g. a query with no letters or digits
    }
    status.hidden = false;
  }

  input.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(find, TYPING_MS);
  });
  document.getElementById("search").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(typing);
    find();
  });

  refresh();
  setInterval(refresh, POLL_MS);
})();
