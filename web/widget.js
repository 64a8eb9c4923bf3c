// <avatar-widget>: a real-time conversational avatar on any web page.
//
//   <script type="module" src="https://avatars.example.com/widget.js"></script>
//   <avatar-widget avatar="cooking-teacher" key="pk_…"></avatar-widget>
//
// Attributes: avatar (preset id or custom avatar id), key (the site's publishable key),
// server (default: where this script came from), max-duration (seconds, ≤ the site's limit).
// Methods: start() → Promise (resolves when the avatar's media plays), end() → Promise,
// setMicrophone(on), sendMessage(text). Events (bubbling, composed): avatar-status
// {sessionId, status, queued, position, etaSeconds, message}, avatar-ended {sessionId, reason, message} and
// avatar-tool {name, args} (a client_event tool call of the avatar).
// While the server's waiting room holds the start, status is "queued" and position/etaSeconds
// say where the visitor is in line ("You're number 3 in line — about 40 s").
// Transports: "webrtc" (the local engine: a plain RTCPeerConnection, no build step) and
// "livekit" (Runway: imports {server}/vendor/runway-avatars.js on demand). See docs/embedding.md.

const SCRIPT_BASE = new URL(".", import.meta.url).href.replace(/\/+$/, "");
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ICE_GATHER_MS = 5000;
const END_WAIT_MS = 5000;
const RECONNECTS = 3;

// One clear sentence per end reason: the server's endReason values, then the widget's own
// (a start the server refused, or a browser-side failure).
export const END_MESSAGES = {
  cap: "Time's up: this conversation reached its time limit.",
  client: "The conversation has ended.",
  admin: "The conversation was ended by the site's administrator.",
  upstream_completed: "The avatar ended the conversation.",
  upstream_failed: "The avatar service failed during the conversation. Please try again.",
  upstream_cancelled: "The avatar service cancelled the conversation.",
  provision_timeout: "The avatar did not get ready in time. Please try again.",
  ready_timeout: "The avatar was ready, but the connection was not made in time. Please try again.",
  abandoned: "The connection to the avatar was lost.",
  queue_timeout: "Too many people are talking to the avatar right now, and the wait ran out. Please try again later.",
  error: "The conversation could not be started because of an error. Please try again.",
  busy: "All avatars are busy right now. Please try again in a moment.",
  server_busy: "So many people want to talk to the avatar right now that the line is full. Please try again in a moment.",
  rate_limited: "Too many conversations were started from here. Please wait a minute and try again.",
  forbidden: "This page is not allowed to start conversations with this avatar.",
  unauthorized: "This avatar widget is not set up correctly (its key is not valid).",
  invalid: "This avatar widget is not set up correctly.",
  media_failed: "The audio and video connection to the avatar failed.",
  network: "The avatar server could not be reached. Check your connection and try again.",
  unsupported: "This browser cannot show the avatar (WebRTC is not available).",
};

const STATUS_TEXT = {
  idle: "",
  starting: "Starting…",
  queued: "Waiting in line for an avatar…",
  provisioning: "Preparing the avatar…",
  connecting: "Connecting…",
  playing: "",
  ending: "Ending…",
  ended: "",
};

const STYLE = `
:host { display: inline-block; width: 360px; max-width: 100%; font: 14px/1.4 system-ui, sans-serif;
  color: #1d2330; --accent: #3457d5; }
.frame { position: relative; aspect-ratio: 1 / 1; background: #10131a; border-radius: 12px; overflow: hidden; }
video { width: 100%; height: 100%; object-fit: cover; display: block; background: #10131a; }
.status { position: absolute; inset: 0; display: flex; flex-direction: column; align-items: center;
  justify-content: center; gap: 10px; color: #eef1f8; text-align: center; padding: 16px; }
.status[hidden] { display: none; }
.spinner { width: 28px; height: 28px; border: 3px solid #ffffff40; border-top-color: #fff; border-radius: 50%;
  animation: spin 0.9s linear infinite; }
.spinner[hidden] { display: none; }
@keyframes spin { to { transform: rotate(360deg); } }
.start { font: inherit; font-weight: 600; padding: 10px 18px; border-radius: 999px; border: 0;
  background: var(--accent); color: #fff; cursor: pointer; }
.start[hidden] { display: none; }
.countdown { position: absolute; top: 8px; left: 8px; padding: 2px 8px; border-radius: 999px;
  background: #000a; color: #fff; font-variant-numeric: tabular-nums; font-size: 13px; }
.countdown.low { background: #c62828; }
.warning { position: absolute; top: 8px; right: 8px; padding: 2px 8px; border-radius: 6px;
  background: #f9a825; color: #1d2330; font-size: 13px; }
.captions { position: absolute; left: 8px; right: 8px; bottom: 8px; display: flex; flex-direction: column;
  gap: 4px; pointer-events: none; }
.caption { align-self: flex-start; max-width: 100%; padding: 4px 8px; border-radius: 6px; background: #000b;
  color: #fff; font-size: 13px; }
.caption.user { align-self: flex-end; background: #3457d5cc; }
.unmute { position: absolute; top: 40px; left: 50%; transform: translateX(-50%); font: inherit;
  padding: 6px 12px; border-radius: 999px; border: 0; background: #fff; cursor: pointer; }
.controls { display: flex; gap: 6px; margin-top: 8px; align-items: center; }
.controls button, .say button { font: inherit; padding: 6px 10px; border-radius: 8px; border: 1px solid #c9cfdb;
  background: #fff; cursor: pointer; }
.controls button:disabled, .say button:disabled, .say input:disabled { opacity: 0.5; cursor: default; }
.controls .end { margin-left: auto; border-color: #c62828; color: #c62828; }
.mic[aria-pressed="false"] { text-decoration: line-through; }
.say { display: flex; gap: 6px; margin-top: 6px; }
.say input { flex: 1; min-width: 0; font: inherit; padding: 6px 8px; border-radius: 8px; border: 1px solid #c9cfdb; }
.message { margin-top: 6px; }
.message:empty { display: none; }
.status-text.error { color: #ffb4a9; }
[hidden] { display: none !important; }
`;

const TEMPLATE = `
<div class="frame" part="frame">
  <video part="video" playsinline></video>
  <div class="status" part="status">
    <div class="spinner" hidden></div>
    <div class="status-text" role="status" aria-live="polite"></div>
    <button class="start" part="start-button" type="button">Talk to the avatar</button>
  </div>
  <div class="countdown" hidden aria-label="time left"></div>
  <div class="warning" role="alert" hidden></div>
  <button class="unmute" type="button" hidden>Tap to hear the avatar</button>
  <div class="captions" aria-live="polite"></div>
</div>
<div class="controls" hidden>
  <button class="mic" type="button" aria-pressed="true" title="Microphone on/off">Mic on</button>
  <button class="end" type="button">End</button>
</div>
<form class="say" hidden>
  <input name="text" maxlength="2000" autocomplete="off" placeholder="Type a message…" aria-label="Message">
  <button type="submit">Send</button>
</form>
<div class="message" role="alert"></div>
`;

// A wait in words: "about 8 s", "about 45 s", "about 1 min", "about 4 min", "about 2 h".
export function aboutWait(seconds) {
  const s = Math.max(1, Math.round(Number(seconds)));
  if (s <= 10) return `about ${s} s`;
  if (s < 55) return `about ${Math.round(s / 5) * 5} s`;
  if (s < 90) return "about 1 min";
  if (s < 90 * 60) return `about ${Math.round(s / 60)} min`;
  return `about ${Math.round(s / 3600)} h`;
}

// What a visitor waiting in the room reads (no ETA known: the place alone).
export function queueText(position, etaSeconds) {
  const eta = Number(etaSeconds);
  return `You're number ${position} in line` +
    (etaSeconds != null && Number.isFinite(eta) && eta > 0 ? ` — ${aboutWait(eta)}` : "");
}

// Retry-After (seconds or an HTTP date) in seconds from now; null when absent or not sensible.
function retryAfterSeconds(resp) {
  const raw = (resp.headers.get("Retry-After") || "").trim();
  if (!raw) return null;
  let s = /^\d+(\.\d+)?$/.test(raw) ? parseFloat(raw) : (Date.parse(raw) - Date.now()) / 1000;
  if (!Number.isFinite(s)) return null;
  s = Math.max(1, s);
  return s <= 6 * 3600 ? s : null;
}

function wait(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

class StartError extends Error {
  constructor(reason, message, detail = {}) {
    super(message || END_MESSAGES[reason] || reason);
    this.name = "AvatarStartError";
    this.reason = reason;
    Object.assign(this, detail);
  }
}

// One conversation: the session, its signal socket, its media. A widget runs one at a time.
class Call {
  constructor(widget) {
    this.w = widget;
    this.server = widget.server;
    this.sessionId = null;
    this.clientToken = null;
    this.ws = null;
    this.pc = null;
    this.channel = null;
    this.handle = null; // livekit adapter handle
    this.mic = null; // MediaStream of the visitor's microphone (webrtc transport)
    this.micOn = true;
    this.mediaStarted = false;
    this.playing = false;
    this.ending = false;
    this.ended = false;
    this.timers = new Set();
    this.started = new Promise((resolve, reject) => { this._resolveStarted = resolve; this._rejectStarted = reject; });
    this.started.catch(() => {}); // start() callers get the rejection; nobody else must
    this.finished = new Promise((resolve) => { this._resolveFinished = resolve; });
  }

  // ------------------------------------------------------------------ start
  async run() {
    const w = this.w;
    const avatar = (w.getAttribute("avatar") || "").trim();
    const key = (w.getAttribute("key") || "").trim();
    if (!avatar || !key) {
      return this.finish("invalid", `Set the widget's ${!avatar ? "avatar" : "key"} attribute.`);
    }
    this.status("starting");
    this.micRequest = Promise.resolve(null);
    const body = { avatar: UUID.test(avatar) ? { type: "custom", avatarId: avatar } : { type: "runway-preset", presetId: avatar } };
    const maxDuration = parseInt(w.getAttribute("max-duration") || "", 10);
    if (Number.isFinite(maxDuration) && maxDuration > 0) body.maxDuration = maxDuration;
    let resp;
    try {
      resp = await fetch(`${this.server}/v1/sessions`, {
        method: "POST",
        headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (err) {
      // A refused origin gets no CORS headers, so the browser only reports a failed fetch:
      // if the server answers otherwise, it was the origin check.
      const reachable = await fetch(`${this.server}/widget.js`, { method: "HEAD", cache: "no-store" })
        .then((r) => r.ok, () => false);
      return this.finish(reachable ? "forbidden" : "network");
    }
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) return this.refused(resp, data);
    this.sessionId = data.id;
    this.clientToken = data.clientToken;
    if (this.ending) {
      await this.deleteSession();
      return this.finish("client");
    }
    if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
      // asked once the server accepted the start, in parallel with provisioning;
      // refused or missing → the avatar only hears typed text
      this.micRequest = navigator.mediaDevices.getUserMedia({ audio: true }).catch(() => null);
    }
    this.openSignal(data.signalUrl);
  }

  refused(resp, data) {
    const err = (data && data.error) || {};
    const code = err.code || "";
    let reason = "error";
    if (resp.status === 429) reason = code === "concurrency_limit" ? "busy" : "rate_limited";
    else if (resp.status === 503 && code === "server_busy") reason = "server_busy";
    else if (resp.status === 403) reason = "forbidden";
    else if (resp.status === 401) reason = "unauthorized";
    else if (resp.status === 400 || resp.status === 422) reason = "invalid";
    const retry = retryAfterSeconds(resp);
    let message = END_MESSAGES[reason];
    if (reason === "busy" && retry != null) {
      message = `All avatars are busy right now. Please try again in ${Math.ceil(retry)} seconds.`;
    } else if (reason === "server_busy") {
      // the room is full, or the server is overloaded: nothing was started; come back later
      if (retry != null) {
        message = "So many people want to talk to the avatar right now that the line is full. " +
          `Please try again in ${aboutWait(retry)}.`;
      }
    } else if (reason !== "busy" && err.message) {
      message = `${END_MESSAGES[reason]} (${err.message})`;
    }
    return this.finish(reason, message, { code, status: resp.status, retryAfter: retry });
  }

  // ------------------------------------------------------------------ signal socket
  openSignal(url) {
    if (this.ended) return;
    const ws = new WebSocket(`${url}?token=${encodeURIComponent(this.clientToken)}`);
    this.ws = ws;
    this.failures = this.failures || 0;
    this.reconnects = this.reconnects || 0;
    ws.onopen = () => { if (this.ending) this.sendSignal({ type: "end" }); };
    ws.onmessage = (ev) => {
      this.failures = 0; // a working socket
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      this.onSignal(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.ended) return;
      this.ws = null;
      if (this.failures >= RECONNECTS || this.reconnects >= 4 * RECONNECTS) return this.finish("abandoned");
      // the server keeps the session for a short grace period: come back within it
      const delay = 500 * 2 ** this.failures;
      this.failures += 1;
      this.reconnects += 1;
      this.later(() => this.openSignal(url), delay);
    };
  }

  sendSignal(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  onSignal(msg) {
    if (this.ended) return;
    switch (msg.type) {
      case "status":
        if (msg.status === "PROVISIONING" && msg.queued) {
          // waiting: in the server's waiting room (with its place and expected wait), or upstream
          const position = Number.isInteger(msg.position) && msg.position > 0 ? msg.position : null;
          const eta = typeof msg.etaSeconds === "number" && Number.isFinite(msg.etaSeconds) ? msg.etaSeconds : null;
          this.status("queued", { queued: true, position, etaSeconds: position ? eta : null });
        } else if (msg.status === "PROVISIONING") this.status("provisioning");
        else if (!this.playing && !this.ending) this.status("connecting");
        break;
      case "credentials":
        this.setDeadline(msg.endsAt, msg.maxDuration);
        if (!this.mediaStarted && !this.ending) {
          this.mediaStarted = true;
          this.connectMedia(msg).catch((err) => this.mediaFailed(err));
        }
        break;
      case "warning":
        this.w._warn(`${msg.remainingSeconds} seconds left`);
        break;
      case "ended":
        this.finish(msg.reason || "error", END_MESSAGES[msg.reason] || msg.message);
        break;
      case "error":
        if (msg.code !== "rate_limited") this.w._note(msg.message || "");
        break;
      default:
        break;
    }
  }

  setDeadline(endsAt, maxDuration) {
    const max = (Number(maxDuration) || 0) * 1000;
    const at = endsAt ? Date.parse(endsAt) : NaN;
    const left = at - Date.now();
    // trust endsAt unless this computer's clock is clearly off from the server's
    if (Number.isFinite(left) && left >= -2000 && (!max || left <= max + 5000)) this.deadline = at;
    else if (max && !this.deadline) this.deadline = Date.now() + max;
    if (this.deadline && !this.countdown) {
      this.countdown = setInterval(() => this.w._countdown(this.deadline - Date.now()), 250);
      this.w._countdown(this.deadline - Date.now());
    }
  }

  // ------------------------------------------------------------------ media
  async connectMedia(creds) {
    this.status("connecting");
    const video = this.w._video;
    // start() resolves with the first painted frame (or, without requestVideoFrameCallback, on "playing")
    if (typeof video.requestVideoFrameCallback === "function") video.requestVideoFrameCallback(() => this.onPlaying());
    else video.addEventListener("playing", () => this.onPlaying(), { once: true });
    if (creds.transport === "livekit") return this.connectLivekit(creds, video);
    if (creds.transport !== "webrtc") throw new StartError("media_failed", `unknown transport ${creds.transport}`);
    if (typeof RTCPeerConnection === "undefined") return this.finishAndEnd("unsupported");
    return this.connectWebrtc(creds, video);
  }

  async connectWebrtc(creds, video) {
    const pc = new RTCPeerConnection({ iceServers: Array.isArray(creds.iceServers) ? creds.iceServers : [] });
    this.pc = pc;
    const channel = pc.createDataChannel("events");
    this.channel = channel;
    channel.onopen = () => this.w._canType(true);
    channel.onclose = () => this.w._canType(false);
    channel.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg.type === "transcription" && typeof msg.text === "string") this.w._caption(msg.role, msg.text);
      else if (msg.type === "client_event" && typeof msg.tool === "string") this.clientEvent(msg.tool, msg.args);
    };
    pc.addTransceiver("video", { direction: "recvonly" });
    this.mic = await this.micRequest;
    if (this.ended) { pc.close(); return; }
    const micTrack = this.mic && this.mic.getAudioTracks()[0];
    if (micTrack) {
      micTrack.enabled = this.micOn;
      pc.addTrack(micTrack, this.mic);
    } else {
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    this.w._micAvailable(!!micTrack);
    const remote = new MediaStream();
    pc.ontrack = (ev) => {
      remote.addTrack(ev.track);
      if (video.srcObject !== remote) video.srcObject = remote;
      this.play(video);
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") this.mediaFailed(new Error("ICE/DTLS failed"));
    };
    await pc.setLocalDescription(await pc.createOffer());
    await this.iceGathered(pc);
    if (this.ended) return;
    // non-trickle: the offer carries every candidate; the answer carries the engine's
    const resp = await fetch(creds.serverUrl, {
      method: "POST",
      headers: { Authorization: `Bearer ${creds.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
    });
    if (!resp.ok) throw new Error(`the media server answered ${resp.status}`);
    const answer = await resp.json();
    if (this.ended) return;
    await pc.setRemoteDescription(answer);
  }

  iceGathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      pc.addEventListener("icegatheringstatechange", check);
      this.later(done, ICE_GATHER_MS); // send what was gathered so far
    });
  }

  // A client_event tool call (Runway's {type:"client_event", tool, args}): the page hears it as a
  // bubbling, composed `avatar-tool` event, detail {name, args}.
  clientEvent(name, args) {
    if (this.ended) return;
    const plain = args && typeof args === "object" && !Array.isArray(args) ? args : {};
    this.w._emit("avatar-tool", { name, args: plain });
  }

  async connectLivekit(creds, video) {
    this.mic = await this.micRequest;
    const wantMic = !!(this.mic && this.mic.getAudioTracks().length);
    if (this.mic) this.mic.getTracks().forEach((t) => t.stop()); // the SDK opens its own
    this.mic = null;
    let mod;
    try {
      mod = await import(`${this.server}/vendor/runway-avatars.js`);
    } catch (err) {
      throw new StartError("media_failed", "The avatar's video player could not be loaded from the server " +
        "(/vendor/runway-avatars.js is missing: build web/vendor).");
    }
    if (this.ended) return;
    this.handle = await mod.connect({
      serverUrl: creds.serverUrl,
      token: creds.token,
      roomName: creds.roomName,
      sessionId: this.sessionId,
      video,
      microphone: wantMic && this.micOn,
      onTranscript: (t) => { if (t && typeof t.text === "string") this.w._caption(t.role, t.text, t.id); },
      onClientEvent: (e) => { if (e && typeof e.name === "string") this.clientEvent(e.name, e.args); },
      onEnd: (reason) => {
        if (this.ended || this.ending) return;
        // the room closed under us: the server will say why; ask it to end in any case
        this.sendSignal({ type: "end" });
        this.later(() => this.finish(reason === "error" ? "media_failed" : "upstream_completed"), END_WAIT_MS);
      },
    });
    if (this.ended) { this.closeMedia(); return; }
    this.w._micAvailable(wantMic && typeof this.handle.setMicrophone === "function");
    this.w._canType(typeof this.handle.sendText === "function");
    if (video.srcObject) this.play(video);
  }

  play(video) {
    video.muted = false;
    video.play().catch((err) => {
      if (err && err.name === "NotAllowedError") {
        // autoplay with sound needs a gesture on this page: play muted and offer to unmute
        video.muted = true;
        video.play().catch(() => {});
        this.w._showUnmute(true);
      }
    });
  }

  onPlaying() {
    if (this.ended || this.playing) return;
    this.playing = true;
    this.status("playing");
    this._resolveStarted({ sessionId: this.sessionId });
  }

  mediaFailed(err) {
    if (this.ended || this.ending) return;
    if (err && err.reason && END_MESSAGES[err.reason]) return this.finishAndEnd(err.reason, err.message);
    this.finishAndEnd("media_failed");
  }

  async finishAndEnd(reason, message) {
    // a browser-side failure: end the session on the server too, then say what happened
    if (!this.sendSignal({ type: "end" })) await this.deleteSession();
    this.finish(reason, message);
  }

  setMicrophone(on) {
    this.micOn = !!on;
    if (this.mic) this.mic.getAudioTracks().forEach((t) => { t.enabled = this.micOn; });
    if (this.handle && typeof this.handle.setMicrophone === "function") {
      Promise.resolve(this.handle.setMicrophone(this.micOn)).catch(() => {});
    }
  }

  sendMessage(text) {
    const value = String(text || "").trim().slice(0, 2000);
    if (!value) return false;
    if (this.channel && this.channel.readyState === "open") {
      this.channel.send(JSON.stringify({ type: "user_message", text: value }));
      return true;
    }
    if (this.handle && typeof this.handle.sendText === "function") {
      Promise.resolve(this.handle.sendText(value)).catch(() => {});
      return true;
    }
    return false;
  }

  // ------------------------------------------------------------------ ending
  async end() {
    if (this.ended) return this.finished;
    if (!this.ending) {
      this.ending = true;
      this.status("ending");
      if (this.sessionId) {
        // the server ends the session (reason client), cancels it upstream and answers `ended`
        if (!this.sendSignal({ type: "end" })) {
          await this.deleteSession();
          this.finish("client");
        } else {
          this.later(async () => { await this.deleteSession(); this.finish("client"); }, END_WAIT_MS);
        }
      }
      // no session yet: run() deletes it as soon as the create answers
    }
    return this.finished;
  }

  async deleteSession() {
    if (!this.sessionId || !this.clientToken) return;
    await fetch(`${this.server}/v1/sessions/${encodeURIComponent(this.sessionId)}`, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${this.clientToken}` },
      keepalive: true,
    }).catch(() => {});
  }

  closeMedia() {
    if (this.handle) {
      const h = this.handle;
      this.handle = null;
      if (typeof h.end === "function") Promise.resolve(h.end()).catch(() => {});
    }
    if (this.channel) { try { this.channel.close(); } catch { /* closed */ } this.channel = null; }
    if (this.pc) { try { this.pc.close(); } catch { /* closed */ } this.pc = null; }
    if (this.mic) { this.mic.getTracks().forEach((t) => t.stop()); this.mic = null; }
    if (this.micRequest) this.micRequest.then((s) => { if (s && this.ended) s.getTracks().forEach((t) => t.stop()); });
    const video = this.w._video;
    if (video.srcObject) {
      video.pause();
      video.srcObject = null;
    }
  }

  finish(reason, message, extra = {}) {
    if (this.ended) return this.finished;
    this.ended = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    if (this.countdown) clearInterval(this.countdown);
    this.closeMedia();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try { ws.close(1000); } catch { /* closed */ }
    }
    const text = message || END_MESSAGES[reason] || END_MESSAGES.error;
    const detail = { sessionId: this.sessionId, reason, message: text };
    this._rejectStarted(new StartError(reason, text, extra));
    this._resolveFinished(detail);
    this.w._ended(this, detail);
    return this.finished;
  }

  later(fn, ms) {
    const t = setTimeout(() => { this.timers.delete(t); fn(); }, ms);
    this.timers.add(t);
  }

  status(status, extra = {}) {
    this.w._status(this, status, extra);
  }
}

export class AvatarWidget extends HTMLElement {
  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = `<style>${STYLE}</style>${TEMPLATE}`;
    const $ = (sel) => root.querySelector(sel);
    this._video = $("video");
    this._el = {
      status: $(".status"), spinner: $(".spinner"), statusText: $(".status-text"), start: $(".start"),
      countdown: $(".countdown"), warning: $(".warning"), unmute: $(".unmute"), captions: $(".captions"),
      controls: $(".controls"), mic: $(".mic"), end: $(".end"), say: $(".say"), message: $(".message"),
    };
    this._call = null;
    this._state = "idle";
    this._el.start.addEventListener("click", () => { this.start().catch(() => {}); });
    this._el.end.addEventListener("click", () => { this.end(); });
    this._el.mic.addEventListener("click", () => {
      this.setMicrophone(this._el.mic.getAttribute("aria-pressed") !== "true");
    });
    this._el.unmute.addEventListener("click", () => {
      this._video.muted = false;
      this._video.play().catch(() => {});
      this._showUnmute(false);
    });
    this._el.say.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = this._el.say.elements.text;
      if (this.sendMessage(input.value)) input.value = "";
    });
    this._onPageHide = () => { if (this._call) this._call.sendSignal({ type: "end" }); };
  }

  connectedCallback() {
    window.addEventListener("pagehide", this._onPageHide);
  }

  disconnectedCallback() {
    window.removeEventListener("pagehide", this._onPageHide);
    // removed from the page (not merely moved): the conversation ends with it
    queueMicrotask(() => { if (!this.isConnected && this._call) this._call.end(); });
  }

  /** The avatar server's base URL: the `server` attribute, or where widget.js came from. */
  get server() {
    return (this.getAttribute("server") || SCRIPT_BASE).replace(/\/+$/, "");
  }

  get sessionId() {
    return this._call ? this._call.sessionId : null;
  }

  get status() {
    return this._state;
  }

  /** Starts a conversation; resolves ({sessionId}) when the avatar's media plays. */
  start() {
    if (this._call && !this._call.ended) return this._call.started;
    const call = new Call(this);
    this._call = call;
    this._el.captions.replaceChildren();
    this._note("");
    call.run().catch(() => call.finish("error"));
    return call.started;
  }

  /** Ends the conversation; resolves with the avatar-ended detail. */
  end() {
    if (!this._call) return Promise.resolve(null);
    return this._call.end();
  }

  setMicrophone(on) {
    this._el.mic.setAttribute("aria-pressed", on ? "true" : "false");
    this._el.mic.textContent = on ? "Mic on" : "Mic off";
    if (this._call) this._call.setMicrophone(on);
  }

  /** Sends a typed message to the avatar (data channel); false when it cannot be sent now. */
  sendMessage(text) {
    return !!(this._call && !this._call.ended && this._call.sendMessage(text));
  }

  // ---------------------------------------------------------------- view (called by Call)
  _status(call, status, extra = {}) {
    if (call !== this._call || call.ended) return;
    this._state = status;
    const busy = ["starting", "queued", "provisioning", "connecting", "ending"].includes(status);
    const position = status === "queued" && extra.position ? extra.position : null;
    const etaSeconds = position ? (extra.etaSeconds ?? null) : null;
    const text = position ? queueText(position, etaSeconds) : (STATUS_TEXT[status] || "");
    this._el.status.hidden = status === "playing";
    this._el.spinner.hidden = !busy;
    this._el.start.hidden = true;
    this._el.statusText.textContent = text;
    this._el.controls.hidden = false;
    this._el.end.disabled = status === "ending";
    this._el.message.textContent = "";
    this._el.statusText.classList.remove("error");
    this._emit("avatar-status", { sessionId: call.sessionId, status, queued: !!extra.queued,
      position, etaSeconds, message: text });
  }

  _ended(call, detail) {
    if (call !== this._call) return;
    this._state = "ended";
    const failure = !["client", "cap", "upstream_completed"].includes(detail.reason);
    this._el.status.hidden = false;
    this._el.spinner.hidden = true;
    this._el.statusText.textContent = detail.message;
    this._el.start.hidden = false;
    this._el.start.textContent = "Talk again";
    this._el.controls.hidden = true;
    this._el.say.hidden = true;
    this._el.countdown.hidden = true;
    this._el.warning.hidden = true;
    this._showUnmute(false);
    this._el.statusText.classList.toggle("error", failure);
    this._el.message.textContent = "";
    this._emit("avatar-status", { sessionId: detail.sessionId, status: "ended", queued: false, position: null,
      etaSeconds: null, message: detail.message });
    this._emit("avatar-ended", detail);
  }

  _countdown(ms) {
    const el = this._el.countdown;
    const s = Math.max(0, Math.ceil(ms / 1000));
    el.hidden = false;
    el.textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    el.classList.toggle("low", s <= 30);
  }

  _warn(text) {
    const el = this._el.warning;
    el.textContent = text;
    el.hidden = false;
    clearTimeout(this._warnTimer);
    this._warnTimer = setTimeout(() => { el.hidden = true; }, 6000);
  }

  _note(text) {
    this._el.message.textContent = text;
  }

  // A caption with an `id` (Runway's transcript deltas: the whole text so far, same id until
  // the turn is final) replaces the line of that id while it is on screen, rather than adding one.
  _caption(role, text, id) {
    const box = this._el.captions;
    if (id != null) {
      const same = [...box.children].find((el) => el.dataset.captionId === String(id));
      if (same) { same.textContent = text; return; }
    }
    const line = document.createElement("div");
    if (id != null) line.dataset.captionId = String(id);
    line.className = `caption ${role === "user" ? "user" : "assistant"}`;
    line.setAttribute("part", `caption caption-${role === "user" ? "user" : "assistant"}`);
    line.textContent = text;
    box.append(line);
    while (box.children.length > 3) box.firstElementChild.remove();
  }

  _canType(on) {
    this._el.say.hidden = !on;
    for (const el of this._el.say.elements) el.disabled = !on;
  }

  _micAvailable(on) {
    this._el.mic.hidden = !on;
  }

  _showUnmute(on) {
    this._el.unmute.hidden = !on;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }
}

if (!customElements.get("avatar-widget")) customElements.define("avatar-widget", AvatarWidget);
