// The widget's `livekit` transport (Runway mode): joins the session's LiveKit room with
// Runway's browser SDK, @runwayml/avatars. Built into dist/runway-avatars.js (npm run build)
// and served at /vendor/runway-avatars.js; the widget imports it only for transport "livekit".
//
//   import { connect } from "/vendor/runway-avatars.js";
//   const call = await connect({ serverUrl, token, roomName, video, onTranscript, onEnd });
//   await call.setMicrophone(false);
//   await call.end();
//
// The server has already consumed the upstream session (the browser never sees a session
// key), so the SDK's `streamTo`/`connect` entry points — which consume it themselves — are
// not used: an `AvatarSession` is joined directly with the media credential the server handed
// out (`serverUrl` + `token` from POST /v1/sessions/connect or the `credentials` frame).
import { AvatarEvent, AvatarSession } from "@runwayml/avatars";

const ROLE_BY_ID = /^runway-transcription-(.+)-\d+$/;

/**
 * Join the avatar's room.
 * @param {object} opts
 * @param {string} opts.serverUrl   LiveKit URL (wss://…)
 * @param {string} opts.token       the one-time media credential
 * @param {string} opts.roomName    the room (kept for logs; the token names the room)
 * @param {HTMLVideoElement} opts.video  receives the avatar's video and audio tracks
 * @param {(t: {role: string, text: string, final: boolean, id: string}) => void} [opts.onTranscript]
 * @param {(e: {name: string, args: object}) => void} [opts.onClientEvent] a client_event tool call
 * @param {(reason: string) => void} [opts.onEnd]  once: "client" (end()), "disconnected", "error"
 * @param {boolean} [opts.microphone=true]  publish the visitor's microphone at once
 * @param {string} [opts.sessionId]
 * @returns {Promise<{end(): Promise<void>, setMicrophone(on: boolean): Promise<void>, session: AvatarSession}>}
 */
export async function connect({
  serverUrl, token, roomName, video, onTranscript, onEnd, onClientEvent, microphone = true, sessionId,
}) {
  if (!serverUrl || !token || !roomName) throw new Error("serverUrl, token and roomName are required");
  if (!video) throw new Error("a <video> element is required");
  const session = new AvatarSession(sessionId || roomName);
  const tracks = { video: null, audio: null };
  let ended = false;
  let connected = false; // before the room is joined, failures reject connect() instead
  let endingByClient = false;

  const attach = () => {
    const list = [tracks.video, tracks.audio].filter(Boolean);
    video.srcObject = new MediaStream(list);
    video.play().catch(() => {});
  };
  // Keep the SDK from playing the audio a second time through its own hidden element:
  // the audio plays from `video` (attach) and the SDK's sink stays muted.
  const sink = document.createElement("audio");
  sink.muted = true;
  session.attachAudio(sink);

  const finish = (reason) => {
    if (ended || !connected) return;
    ended = true;
    video.srcObject = null;
    sink.srcObject = null;
    if (onEnd) onEnd(reason);
  };

  session.on(AvatarEvent.AvatarVideoReady, (track) => { tracks.video = track; attach(); });
  session.on(AvatarEvent.AvatarAudioReady, (track) => { tracks.audio = track; attach(); });
  session.on(AvatarEvent.Transcript, (entry) => {
    if (!onTranscript || !entry || typeof entry.text !== "string") return;
    onTranscript({ role: roleOf(entry, session), text: entry.text, final: !!entry.final, id: entry.id });
  });
  // client_event tool calls: the SDK parses Runway's {type:"client_event", tool, args} data-channel
  // payloads and emits them as AvatarEvent.ClientEvent
  session.on(AvatarEvent.ClientEvent, (event) => {
    if (!onClientEvent || !event || typeof event.tool !== "string") return;
    onClientEvent({ name: event.tool, args: event.args && typeof event.args === "object" ? event.args : {} });
  });
  session.on(AvatarEvent.StateChanged, (state) => {
    if (state === "ended") finish(endingByClient ? "client" : "disconnected");
    else if (state === "error") finish("error");
  });

  // audio: the visitor's microphone; video: no camera (the avatar only listens).
  // `_connect` is the SDK's own join (what its streamTo/connect call after consuming in the
  // browser); it has no public entry point taking credentials the server already consumed. The
  // version is pinned (package.json) and tests/e2e/test_react_sdk.py checks this call reaches
  // LiveKit with the token; the guard below makes an upgrade that drops it fail clearly.
  if (typeof session._connect !== "function") {
    throw new Error("@runwayml/avatars has no AvatarSession._connect any more: see web/vendor/README.md");
  }
  await session._connect(serverUrl, token, { audio: microphone, video: false });
  connected = true;
  if (session.state === "ended" || session.state === "error") finish("disconnected");

  return {
    session,
    async end() {
      endingByClient = true;
      await session.end(); // sends {"type":"END_CALL"} on the data channel, then leaves the room
      finish("client");
    },
    async setMicrophone(on) {
      if (on) await session.mic.enable();
      else await session.mic.disable();
    },
  };
}

function roleOf(entry, session) {
  const m = ROLE_BY_ID.exec(entry.id || "");
  if (m) return m[1] === "assistant" ? "assistant" : m[1];
  const local = session.room?.localParticipant?.identity;
  return local && entry.participantIdentity === local ? "user" : "assistant";
}

export default { connect };
