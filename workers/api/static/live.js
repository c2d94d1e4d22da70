// The live view: a session's HLS stream while it records (workers/live.py), played through
// Media Source Extensions (Chromium, Firefox) or natively (Safari). The media playlist is
// read every POLL_MS; each new init and media segment is appended once, in order; the
// stream ends at #EXT-X-ENDLIST. The player starts muted near the live edge.
"use strict";

(function () {
  const sp = window.sessionpipe;
  const POLL_MS = 1000;
  const LIVE_EDGE_S = 1.5; // how far behind the newest frame a live start begins

  function parsePlaylist(text) {
    const entries = [];
    let init = null;
    let duration = 0;
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (line.startsWith("#EXT-X-MAP:")) {
        const match = /URI="([^"]+)"/.exec(line);
        init = match ? match[1] : null;
      } else if (line.startsWith("#EXTINF:")) {
        duration = parseFloat(line.slice("#EXTINF:".length));
      } else if (line && !line.startsWith("#")) {
        entries.push({ init, uri: line, duration });
      }
    }
    return { entries, ended: text.includes("#EXT-X-ENDLIST") };
  }
  sp.parsePlaylist = parsePlaylist;

  async function fetchOk(url, kind) {
    const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) {
      const error = new Error(`${url}: HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return kind === "text" ? response.text() : response.arrayBuffer();
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const once = (target, name) =>
    new Promise((resolve) => target.addEventListener(name, resolve, { once: true }));

  // Start the live view of `base` (/sessions/<id>) in `player`; null when the browser can
  // play neither MSE nor HLS. The returned object's state is what the tests read.
  sp.startLive = function startLive(player, base) {
    const state = { stopped: false, appended: 0, ended: false, error: null, native: false };
    const view = { state, stop: () => { state.stopped = true; } };
    if (!window.MediaSource) {
      if (player.canPlayType("application/vnd.apple.mpegurl")) {
        state.native = true;
        player.src = `${base}/live.m3u8`; // Safari plays HLS itself
        return view;
      }
      return null;
    }
    run(player, base, state).catch((error) => {
      state.error = error.message;
    });
    return view;
  };

  async function run(player, base, state) {
    let master = null;
    while (!state.stopped && master === null) {
      try {
        master = await fetchOk(`${base}/live.m3u8`, "text");
      } catch (error) {
        if (error.status !== 404) throw error;
        await sleep(POLL_MS); // no fragment written yet
      }
    }
    if (state.stopped) return;
    const codecs = (/CODECS="([^"]+)"/.exec(master) || [])[1] || "avc1.640028,mp4a.40.2";
    const mime = `video/mp4; codecs="${codecs}"`;
    if (!MediaSource.isTypeSupported(mime)) throw new Error(`this browser cannot play ${mime}`);
    const media = new MediaSource();
    player.src = URL.createObjectURL(media);
    await once(media, "sourceopen");
    const buffer = media.addSourceBuffer(mime);
    let init = null;
    while (!state.stopped) {
      const playlist = parsePlaylist(await fetchOk(`${base}/live/media.m3u8`, "text"));
      for (const entry of playlist.entries.slice(state.appended)) {
        if (state.stopped) return;
        if (entry.init !== init) {
          buffer.appendBuffer(await fetchOk(`${base}/live/${entry.init}`));
          await once(buffer, "updateend");
          init = entry.init;
        }
        buffer.appendBuffer(await fetchOk(`${base}/live/${entry.uri}`));
        await once(buffer, "updateend");
        state.appended += 1;
        if (state.appended === 1 && !playlist.ended && buffer.buffered.length) {
          const end = buffer.buffered.end(buffer.buffered.length - 1);
          player.currentTime = Math.max(0, end - LIVE_EDGE_S);
          player.muted = true; // browsers only start muted video by themselves
          player.play().catch(() => {});
        }
      }
      if (playlist.ended && state.appended === playlist.entries.length) {
        state.ended = true;
        if (media.readyState === "open") media.endOfStream();
        return;
      }
      await sleep(POLL_MS);
    }
  }
})();
