// The admin console: avatars (and custom voices), knowledge documents (and each avatar's knowledge budget), sites
// (and their webhook deliveries), live sessions (with the waiting room and the upstream request budget),
// conversations (transcripts) and usage per site, over the server's admin API. Plain ES module, no build step.
//
// The admin token is kept in sessionStorage (this tab only) and sent only as
// `Authorization: Bearer …` to this page's own origin; it never goes into a URL.
// Every API error is shown from the answer's {"error": {code, message, …}}.

const TOKEN_KEY = "avatar_server.adminToken";
const KNOWLEDGE_LIMIT = 50000; // tokens of linked knowledge per avatar (the server enforces it)
const DATA_URI_MAX = 5242880; // the longest referenceImage the server takes
const IMAGE_TYPES = ["image/jpeg", "image/png", "image/webp"];
const SESSIONS_REFRESH_MS = 3000;
const AVATARS_REFRESH_MS = 3000; // while some avatar is PROCESSING
const DELIVERIES_REFRESH_MS = 3000; // while a site's webhooks are open

// Runway's live voice presets and realtime-session preset avatars (avatar_server/models/avatars.py).
const VOICE_PRESETS = [
  "victoria", "vincent", "clara", "drew", "skye", "max", "morgan", "felix", "mia", "marcus",
  "summer", "ruby", "aurora", "jasper", "leo", "adrian", "nina", "emma", "blake", "david",
  "maya", "nathan", "sam", "georgia", "petra", "adam", "zach", "violet", "roman", "luna",
];
const SESSION_PRESETS = [
  "game-character", "music-superstar", "game-character-man", "cat-character", "influencer",
  "tennis-coach", "human-resource", "fashion-designer", "cooking-teacher",
];

const $ = (sel, root = document) => root.querySelector(sel);
// form controls by name (form.name / form.id would be the form's own properties)
const fld = (form, name) => form.elements.namedItem(name);

const state = {
  token: null,
  tab: "avatars",
  avatars: [],
  documents: [],
  sites: [],
  sessions: [],
  room: null, // GET /v1/waiting-room
  sitesAsked: new Set(), // site ids seen in the room and looked up once
  knowledgeAvatarId: null,
  embedSiteId: null,
  webhooksSiteId: null,
  webhookSecret: null, // { siteId, secret }: shown once, after a create or a rotation, until closed
  deliveries: [],
  voices: [], // GET /v1/voices (custom voices, for the avatar form)
  conversations: [],
  conversationsCursor: null,
  transcriptId: null,
  timers: { sessions: null, avatars: null, tick: null, deliveries: null },
};

// --------------------------------------------------------------------------- the API

export class ApiError extends Error {
  constructor(status, code, message, detail = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network_error", `The server could not be reached (${err.message}).`);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const e = data && typeof data === "object" && data.error ? data.error : null;
    const { code, message, ...detail } = e || {};
    const err = new ApiError(resp.status, code || `http_${resp.status}`,
      message || `The server answered ${resp.status} ${resp.statusText}.`, detail);
    if (resp.status === 401) signOut(err);
    throw err;
  }
  return data;
}

async function listAll(path) {
  const out = [];
  let cursor = null;
  for (let page = 0; page < 50; page++) {
    const sep = path.includes("?") ? "&" : "?";
    const q = `${path}${sep}limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const data = await api("GET", q);
    out.push(...(data.data || []));
    if (!data.hasMore || !data.nextCursor) break;
    cursor = data.nextCursor;
  }
  return out;
}

const enc = encodeURIComponent;

// --------------------------------------------------------------------------- notices

function showError(err) {
  const n = $("#notice");
  n.className = "error";
  n.replaceChildren();
  if (err instanceof ApiError) {
    n.append(h("strong", {}, err.message));
    const bits = [err.code];
    if (err.detail.field) bits.push(`field ${err.detail.field}`);
    if (err.detail.limit != null) bits.push(`limit ${fmtNum(err.detail.limit)}`);
    if (err.status) bits.push(`HTTP ${err.status}`);
    n.append(" ", h("code", { class: "code" }, bits.join(" · ")));
    n.dataset.code = err.code;
  } else {
    n.append(h("strong", {}, String(err && err.message ? err.message : err)));
    n.dataset.code = "client_error";
  }
  n.append(h("button", { type: "button", class: "close", "aria-label": "Dismiss", onclick: hideNotice }, "×"));
  n.hidden = false;
}

function showInfo(message) {
  const n = $("#notice");
  n.className = "info";
  n.dataset.code = "";
  n.replaceChildren(h("span", {}, message),
    h("button", { type: "button", class: "close", "aria-label": "Dismiss", onclick: hideNotice }, "×"));
  n.hidden = false;
}

function hideNotice() {
  $("#notice").hidden = true;
}

/** Runs an action, showing its error (or its success message) in the notice. */
async function run(action, success) {
  try {
    const result = await action();
    if (success) showInfo(typeof success === "function" ? success(result) : success);
    else hideNotice();
    return result;
  } catch (err) {
    showError(err);
    return undefined;
  }
}

// --------------------------------------------------------------------------- DOM helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const fmtNum = (n) => Number(n).toLocaleString("en-US");

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

function fmtLeft(iso) {
  if (!iso) return "—";
  const ms = new Date(iso).getTime() - Date.now();
  if (Number.isNaN(ms)) return "—";
  if (ms <= 0) return "0:00";
  const s = Math.ceil(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function fillTable(table, rows, emptyEl) {
  $("tbody", table).replaceChildren(...rows);
  if (emptyEl) emptyEl.hidden = rows.length > 0;
}

function openPanel(el) {
  el.hidden = false;
  el.scrollIntoView({ block: "nearest" });
}

// --------------------------------------------------------------------------- sign in / out

async function signIn(token) {
  state.token = token;
  try {
    await api("GET", "/v1/sites?limit=1"); // any admin route tells whether the token is good
  } catch (err) {
    state.token = null;
    if (err.status === 401 || err.status === 403) sessionStorage.removeItem(TOKEN_KEY); // not for a network error
    showError(err);
    return false;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#login").hidden = true;
  $("#console").hidden = false;
  $("#sign-out").hidden = false;
  hideNotice();
  await loadAll();
  selectTab(state.tab);
  return true;
}

function signOut(reason) {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopTimers();
  $("#console").hidden = true;
  $("#sign-out").hidden = true;
  $("#login").hidden = false;
  $("#token").value = "";
  if (reason) showError(reason);
}

function stopTimers() {
  for (const k of Object.keys(state.timers)) {
    clearInterval(state.timers[k]);
    state.timers[k] = null;
  }
}

async function loadAll() {
  await run(async () => {
    const [documents, avatars, sites] = await Promise.all([
      listAll("/v1/documents"), listAll("/v1/avatars"), listAll("/v1/sites"),
    ]);
    state.documents = documents;
    state.avatars = avatars;
    state.sites = sites;
  });
  renderAvatars();
  renderDocuments();
  renderSites();
  await refreshVoices();
}

// --------------------------------------------------------------------------- tabs

function selectTab(name) {
  state.tab = name;
  for (const btn of document.querySelectorAll("[role=tab]")) {
    btn.setAttribute("aria-selected", String(btn.dataset.tab === name));
  }
  for (const panel of document.querySelectorAll("[role=tabpanel]")) {
    panel.hidden = panel.id !== `tab-${name}`;
  }
  clearInterval(state.timers.sessions);
  clearInterval(state.timers.tick);
  state.timers.sessions = state.timers.tick = null;
  if (name === "sessions") {
    refreshSessions();
    state.timers.sessions = setInterval(refreshSessions, SESSIONS_REFRESH_MS);
    state.timers.tick = setInterval(tickCountdowns, 1000);
  } else if (name === "avatars") {
    refreshAvatars();
  } else if (name === "documents") {
    refreshDocuments();
  } else if (name === "sites") {
    refreshSites();
  } else if (name === "conversations") {
    refreshConversations();
  } else if (name === "usage") {
    refreshUsage();
  }
}

// --------------------------------------------------------------------------- avatars

const docById = (id) => state.documents.find((d) => d.id === id);
const avatarById = (id) => state.avatars.find((a) => a.id === id);

function knowledgeTotal(avatar) {
  return (avatar.documentIds || []).reduce((sum, id) => sum + (docById(id)?.tokens || 0), 0);
}

function budgetMeter(total, attrs = {}) {
  return h("meter", { min: 0, max: KNOWLEDGE_LIMIT, low: KNOWLEDGE_LIMIT * 0.8, high: KNOWLEDGE_LIMIT * 0.95,
    optimum: 0, value: Math.min(total, KNOWLEDGE_LIMIT), title: `${fmtNum(total)} of ${fmtNum(KNOWLEDGE_LIMIT)} tokens`,
    ...attrs });
}

function voiceLabel(voice) {
  if (!voice) return "—";
  return voice.type === "runway-live-preset" ? voice.presetId : `custom ${voice.id}`;
}

function renderAvatars() {
  const rows = state.avatars.map((a) => {
    const total = knowledgeTotal(a);
    const img = a.processedImageUri || a.referenceImageUri;
    return h("tr", { dataset: { id: a.id } },
      h("td", {}, img ? h("img", { class: "thumb", src: img, alt: "" }) : ""),
      h("td", { class: "name" }, a.name),
      h("td", {}, h("span", { class: `status status-${(a.status || "").toLowerCase()}` }, a.status),
        a.status === "FAILED" && a.failureReason ? h("div", { class: "muted small" }, a.failureReason) : ""),
      h("td", {}, voiceLabel(a.voice)),
      h("td", { class: "budget-cell" }, budgetMeter(total),
        h("span", { class: "small budget-text" }, `${fmtNum(total)} / ${fmtNum(KNOWLEDGE_LIMIT)}`)),
      h("td", { class: "row-actions" },
        h("button", { type: "button", class: "secondary", "data-action": "edit", onclick: () => editAvatar(a.id) },
          "Edit"),
        h("button", { type: "button", class: "secondary", "data-action": "knowledge",
          onclick: () => openKnowledge(a.id) }, "Knowledge"),
        h("button", { type: "button", class: "danger", "data-action": "delete", onclick: () => deleteAvatar(a.id) },
          "Delete")));
  });
  fillTable($("#avatars-table"), rows, $("#avatars-empty"));
  // keep polling while an avatar is being processed
  const processing = state.avatars.some((a) => a.status === "PROCESSING");
  if (processing && !state.timers.avatars) {
    state.timers.avatars = setInterval(() => { if (state.tab === "avatars") refreshAvatars(true); },
      AVATARS_REFRESH_MS);
  } else if (!processing && state.timers.avatars) {
    clearInterval(state.timers.avatars);
    state.timers.avatars = null;
  }
  if (state.knowledgeAvatarId) renderKnowledge();
}

async function refreshAvatars(quiet = false) {
  const ok = await (quiet ? quietly : run)(async () => {
    const [avatars, documents] = await Promise.all([listAll("/v1/avatars"), listAll("/v1/documents")]);
    state.avatars = avatars;
    state.documents = documents;
    return true;
  });
  if (ok) renderAvatars();
}

async function quietly(action) {
  try {
    return await action();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return undefined;
    showError(err);
    return undefined;
  }
}

function avatarForm() {
  return $("#avatar-form");
}

function resetImageInputs(form) {
  fld(form, "imageFile").value = "";
  fld(form, "imageUrl").value = "";
  delete form.dataset.imageData;
  $("#avatar-image-preview").hidden = true;
  $("#avatar-image-preview").removeAttribute("src");
  $("#avatar-image-note").textContent = "";
}

function newAvatar() {
  const form = avatarForm();
  form.reset();
  fld(form, "id").value = "";
  resetImageInputs(form);
  fld(form, "voice").value = VOICE_PRESETS[0];
  $("#avatar-form-title").textContent = "New avatar";
  $("#avatar-image-note").textContent = "An image is required for a new avatar.";
  $("#knowledge").hidden = true;
  openPanel(form);
  fld(form, "name").focus();
}

function editAvatar(id) {
  const a = avatarById(id);
  if (!a) return;
  const form = avatarForm();
  form.reset();
  resetImageInputs(form);
  fld(form, "id").value = a.id;
  fld(form, "name").value = a.name;
  fld(form, "personality").value = a.personality || "";
  fld(form, "startScript").value = a.startScript || "";
  if (a.voice?.type === "runway-live-preset") fld(form, "voice").value = a.voice.presetId;
  form.dataset.customVoice = a.voice?.type === "custom" ? a.voice.id : "";
  if (a.voice?.type === "custom") {
    ensureOption(fld(form, "voice"), `custom:${a.voice.id}`, `custom voice ${a.voice.id}`);
    fld(form, "voice").value = `custom:${a.voice.id}`;
  }
  $("#avatar-form-title").textContent = `Edit ${a.name}`;
  $("#avatar-image-note").textContent = "Leave the image empty to keep the current one.";
  $("#knowledge").hidden = true;
  openPanel(form);
}

function ensureOption(select, value, label) {
  if (![...select.options].some((o) => o.value === value)) select.append(h("option", { value }, label));
}

function readFileAsDataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(new Error(`The file ${file.name} could not be read.`));
    reader.readAsDataURL(file);
  });
}

async function onImageFile(ev) {
  const form = avatarForm();
  const file = ev.target.files[0];
  delete form.dataset.imageData;
  $("#avatar-image-preview").hidden = true;
  if (!file) return;
  if (!IMAGE_TYPES.includes(file.type)) {
    showError(new Error(`${file.name}: the reference image must be JPEG, PNG or WebP (this is ${file.type || "unknown"}).`));
    ev.target.value = "";
    return;
  }
  const uri = await readFileAsDataUri(file).catch((err) => { showError(err); return null; });
  if (!uri) return;
  if (uri.length > DATA_URI_MAX) {
    showError(new Error(`${file.name} is too large: as a data URI it is ${fmtNum(uri.length)} characters, ` +
      `the limit is ${fmtNum(DATA_URI_MAX)} (about 3.7 MB of image).`));
    ev.target.value = "";
    return;
  }
  form.dataset.imageData = uri;
  const preview = $("#avatar-image-preview");
  preview.src = uri;
  preview.hidden = false;
  $("#avatar-image-note").textContent = `${file.name}, ${fmtNum(file.size)} bytes`;
}

async function saveAvatar(ev) {
  ev.preventDefault();
  const form = avatarForm();
  const id = fld(form, "id").value;
  const existing = id ? avatarById(id) : null;
  const voiceValue = fld(form, "voice").value;
  const voice = voiceValue.startsWith("custom:")
    ? { type: "custom", id: voiceValue.slice("custom:".length) }
    : { type: "runway-live-preset", presetId: voiceValue };
  const image = form.dataset.imageData || fld(form, "imageUrl").value.trim() || null;
  const body = { name: fld(form, "name").value.trim(), personality: fld(form, "personality").value, voice };
  const startScript = fld(form, "startScript").value.trim();
  if (startScript) body.startScript = startScript;
  else if (existing && existing.startScript) body.startScript = null; // clears it
  if (image) body.referenceImage = image;
  if (!id && !image) {
    showError(new Error("Choose a reference image (a file or an https URL)."));
    return;
  }
  const saved = await run(() => (id ? api("PATCH", `/v1/avatars/${enc(id)}`, body) : api("POST", "/v1/avatars", body)),
    (a) => `Avatar ${a.name} ${id ? "saved" : "created"} (${a.status}).`);
  if (!saved) return;
  form.hidden = true;
  resetImageInputs(form);
  await refreshAvatars(true);
}

async function deleteAvatar(id) {
  const a = avatarById(id);
  if (!a || !confirm(`Delete the avatar ${a.name}? Sites that list it can no longer start it.`)) return;
  const done = await run(async () => { await api("DELETE", `/v1/avatars/${enc(id)}`); return true; },
    `Avatar ${a.name} deleted.`);
  if (!done) return;
  if (state.knowledgeAvatarId === id) closeKnowledge();
  if (fld(avatarForm(), "id").value === id) avatarForm().hidden = true;
  await refreshAvatars(true);
}

// --------------------------------------------------------------------------- knowledge budget

function openKnowledge(id) {
  state.knowledgeAvatarId = id;
  avatarForm().hidden = true;
  renderKnowledge();
  openPanel($("#knowledge"));
}

function closeKnowledge() {
  state.knowledgeAvatarId = null;
  $("#knowledge").hidden = true;
}

function renderKnowledge() {
  const a = avatarById(state.knowledgeAvatarId);
  if (!a) {
    closeKnowledge();
    return;
  }
  const total = knowledgeTotal(a);
  $("#knowledge-avatar-name").textContent = a.name;
  const meter = $("#knowledge-meter");
  meter.value = Math.min(total, KNOWLEDGE_LIMIT);
  meter.title = `${fmtNum(total)} of ${fmtNum(KNOWLEDGE_LIMIT)} tokens`;
  const left = KNOWLEDGE_LIMIT - total;
  $("#knowledge-total").textContent =
    `${fmtNum(total)} / ${fmtNum(KNOWLEDGE_LIMIT)} tokens (${fmtNum(Math.max(left, 0))} left)`;
  $("#knowledge-total").dataset.total = String(total);
  const linked = (a.documentIds || []).map((docId) => {
    const d = docById(docId);
    return h("tr", { dataset: { id: docId } },
      h("td", {}, d ? d.name : docId),
      h("td", {}, d ? fmtNum(d.tokens) : "?"),
      h("td", { class: "row-actions" },
        h("button", { type: "button", class: "secondary", "data-action": "unlink",
          onclick: () => unlinkDocument(a.id, docId) }, "Unlink")));
  });
  fillTable($("#knowledge-linked"), linked);
  const select = $("#knowledge-select");
  const candidates = state.documents.filter((d) => !(a.documentIds || []).includes(d.id));
  select.replaceChildren(...candidates.map((d) => {
    const fits = d.tokens <= left;
    return h("option", { value: d.id }, `${d.name} — ${fmtNum(d.tokens)} tokens${fits ? "" : " (over budget)"}`);
  }));
  select.disabled = candidates.length === 0;
  $("#knowledge-link-form button[type=submit]").disabled = candidates.length === 0;
}

async function linkDocument(ev) {
  ev.preventDefault();
  const avatarId = state.knowledgeAvatarId;
  const docId = $("#knowledge-select").value;
  if (!avatarId || !docId) return;
  const d = docById(docId);
  const updated = await run(() => api("PUT", `/v1/avatars/${enc(avatarId)}/documents/${enc(docId)}`),
    `Linked ${d ? d.name : docId}.`);
  if (updated) await applyKnowledgeChange(updated);
}

async function unlinkDocument(avatarId, docId) {
  const d = docById(docId);
  const updated = await run(() => api("DELETE", `/v1/avatars/${enc(avatarId)}/documents/${enc(docId)}`),
    `Unlinked ${d ? d.name : docId}.`);
  if (updated) await applyKnowledgeChange(updated);
}

async function applyKnowledgeChange(avatar) {
  if (avatar && avatar.id) {
    state.avatars = state.avatars.map((a) => (a.id === avatar.id ? avatar : a));
  }
  // usedBy of the documents changed too
  const documents = await quietly(() => listAll("/v1/documents"));
  if (documents) state.documents = documents;
  renderAvatars();
  renderDocuments();
}

// --------------------------------------------------------------------------- documents

function renderDocuments() {
  const rows = state.documents.map((d) => h("tr", { dataset: { id: d.id } },
    h("td", { class: "name" }, d.name),
    h("td", { class: "tokens" }, fmtNum(d.tokens)),
    h("td", { class: "used-by" }, (d.usedBy || []).length
      ? (d.usedBy || []).map((u) => u.name).join(", ") : h("span", { class: "muted" }, "no avatar")),
    h("td", {}, fmtTime(d.updatedAt)),
    h("td", { class: "row-actions" },
      h("button", { type: "button", class: "secondary", "data-action": "edit", onclick: () => editDocument(d.id) },
        "Edit"),
      h("button", { type: "button", class: "danger", "data-action": "delete", onclick: () => deleteDocument(d.id) },
        "Delete"))));
  fillTable($("#documents-table"), rows, $("#documents-empty"));
}

async function refreshDocuments() {
  const docs = await run(() => listAll("/v1/documents"));
  if (docs) {
    state.documents = docs;
    renderDocuments();
  }
}

function newDocument() {
  const form = $("#document-form");
  form.reset();
  fld(form, "id").value = "";
  $("#document-form-title").textContent = "New document";
  openPanel(form);
  fld(form, "name").focus();
}

async function editDocument(id) {
  const doc = await run(() => api("GET", `/v1/documents/${enc(id)}`));
  if (!doc) return;
  const form = $("#document-form");
  form.reset();
  fld(form, "id").value = doc.id;
  fld(form, "name").value = doc.name;
  fld(form, "content").value = doc.content;
  $("#document-form-title").textContent = `Edit ${doc.name} (${fmtNum(doc.tokens)} tokens)`;
  openPanel(form);
}

async function onDocumentFile(ev) {
  const file = ev.target.files[0];
  if (!file) return;
  const form = $("#document-form");
  try {
    fld(form, "content").value = await file.text();
    if (!fld(form, "name").value) fld(form, "name").value = file.name;
  } catch {
    showError(new Error(`The file ${file.name} could not be read.`));
  }
}

async function saveDocument(ev) {
  ev.preventDefault();
  const form = $("#document-form");
  const id = fld(form, "id").value;
  const body = { name: fld(form, "name").value.trim(), content: fld(form, "content").value };
  const saved = await run(
    () => (id ? api("PATCH", `/v1/documents/${enc(id)}`, body) : api("POST", "/v1/documents", body)),
    (d) => `Document ${d.name} ${id ? "saved" : "created"}: ${fmtNum(d.tokens)} tokens.`);
  if (!saved) return;
  form.hidden = true;
  await refreshAvatars(true); // documents and the budgets that use them
  renderDocuments();
}

async function deleteDocument(id) {
  const d = docById(id);
  const users = (d?.usedBy || []).map((u) => u.name);
  if (!d || !confirm(`Delete the document ${d.name}?` +
    (users.length ? ` It is unlinked from ${users.join(", ")}.` : ""))) return;
  const done = await run(async () => { await api("DELETE", `/v1/documents/${enc(id)}`); return true; },
    `Document ${d.name} deleted.`);
  if (!done) return;
  if (fld($("#document-form"), "id").value === id) $("#document-form").hidden = true;
  await refreshAvatars(true);
  renderDocuments();
}

// --------------------------------------------------------------------------- sites

function avatarName(id) {
  const a = avatarById(id);
  return a ? a.name : id;
}

function renderSites() {
  const rows = state.sites.map((s) => h("tr", { dataset: { id: s.id } },
    h("td", { class: "name" }, s.name),
    h("td", { class: "origins" }, (s.allowedOrigins || []).map((o) => h("div", {}, o))),
    h("td", { class: "avatars" }, (s.avatarIds || []).map((id) => h("div", {}, avatarName(id)))),
    h("td", { class: "small" },
      h("div", {}, `${s.activeSessions ?? 0} of ${s.maxConcurrentSessions} at once`),
      h("div", {}, s.maxDuration ? `up to ${s.maxDuration} s each` : "server's cap")),
    h("td", {},
      h("code", { class: "key" }, s.publishableKey),
      s.keyRotatedAt ? h("div", { class: "muted small" }, `rotated ${fmtTime(s.keyRotatedAt)}`) : ""),
    h("td", { class: "row-actions" },
      h("button", { type: "button", class: "secondary", "data-action": "embed", onclick: () => openEmbed(s.id) },
        "Embed"),
      h("button", { type: "button", class: "secondary", "data-action": "edit", onclick: () => editSite(s.id) },
        "Edit"),
      h("button", { type: "button", class: "secondary", "data-action": "rotate", onclick: () => rotateKey(s.id) },
        "Rotate key"),
      h("button", { type: "button", class: "secondary", "data-action": "webhooks",
        onclick: () => openWebhooks(s.id) }, "Webhooks"),
      h("button", { type: "button", class: "danger", "data-action": "delete", onclick: () => deleteSite(s.id) },
        "Delete"))));
  fillTable($("#sites-table"), rows, $("#sites-empty"));
  if (state.embedSiteId) renderEmbed();
  if (state.webhooksSiteId) renderWebhooks();
}

async function refreshSites() {
  const ok = await run(async () => {
    const [sites, avatars] = await Promise.all([listAll("/v1/sites"), listAll("/v1/avatars")]);
    state.sites = sites;
    state.avatars = avatars;
    return true;
  });
  if (ok) renderSites();
}

function renderSiteAvatarChoices(selected) {
  const box = $("#site-avatar-choices");
  const choice = (id, label, group) => h("label", { class: "choice" },
    h("input", { type: "checkbox", name: "avatarIds", value: id, checked: selected.includes(id) }),
    " ", label, group ? h("span", { class: "muted small" }, ` ${group}`) : "");
  const known = new Set([...state.avatars.map((a) => a.id), ...SESSION_PRESETS]);
  box.replaceChildren(
    ...state.avatars.map((a) => choice(a.id, a.name, a.status === "READY" ? "" : `(${a.status})`)),
    ...SESSION_PRESETS.map((p) => choice(p, p, "(Runway preset)")),
    ...selected.filter((id) => !known.has(id)).map((id) => choice(id, id, "(unknown)")));
}

function newSite() {
  const form = $("#site-form");
  form.reset();
  fld(form, "id").value = "";
  fld(form, "allowedOrigins").value = location.origin;
  renderSiteAvatarChoices([]);
  $("#site-form-title").textContent = "New site";
  $("#embed").hidden = true;
  openPanel(form);
  fld(form, "name").focus();
}

function editSite(id) {
  const s = state.sites.find((x) => x.id === id);
  if (!s) return;
  const form = $("#site-form");
  form.reset();
  fld(form, "id").value = s.id;
  fld(form, "name").value = s.name;
  fld(form, "allowedOrigins").value = (s.allowedOrigins || []).join("\n");
  fld(form, "maxConcurrentSessions").value = s.maxConcurrentSessions;
  fld(form, "maxDuration").value = s.maxDuration ?? "";
  fld(form, "webhookUrl").value = s.webhookUrl ?? "";
  renderSiteAvatarChoices(s.avatarIds || []);
  $("#site-form-title").textContent = `Edit ${s.name}`;
  $("#embed").hidden = true;
  openPanel(form);
}

async function saveSite(ev) {
  ev.preventDefault();
  const form = $("#site-form");
  const id = fld(form, "id").value;
  const body = {
    name: fld(form, "name").value.trim(),
    allowedOrigins: fld(form, "allowedOrigins").value.split(/[\s,]+/).map((o) => o.trim()).filter(Boolean),
    avatarIds: [...form.querySelectorAll("input[name=avatarIds]:checked")].map((i) => i.value),
    maxConcurrentSessions: Number(fld(form, "maxConcurrentSessions").value),
  };
  const maxDuration = fld(form, "maxDuration").value.trim();
  if (maxDuration) body.maxDuration = Number(maxDuration);
  else if (id) body.maxDuration = null; // removes the site's own limit
  const webhookUrl = fld(form, "webhookUrl").value.trim();
  if (webhookUrl) body.webhookUrl = webhookUrl;
  else if (id) body.webhookUrl = null; // stops its webhooks
  const saved = await run(() => (id ? api("PATCH", `/v1/sites/${enc(id)}`, body) : api("POST", "/v1/sites", body)),
    (s) => `Site ${s.name} ${id ? "saved" : "created"}.`);
  if (!saved) return;
  form.hidden = true;
  await refreshSites();
  if (!id) {
    openEmbed(saved.id);
    // the webhook secret comes in the create answer only: show it now
    if (saved.webhookUrl && saved.webhookSecret) openWebhooks(saved.id, saved.webhookSecret);
  }
}

async function rotateKey(id) {
  const s = state.sites.find((x) => x.id === id);
  if (!s || !confirm(`Replace the publishable key of ${s.name}? The current key stops working at once; ` +
    "pages that embed it need the new one.")) return;
  const updated = await run(() => api("POST", `/v1/sites/${enc(id)}/rotate-key`),
    (x) => `New key for ${x.name}; the old one no longer works.`);
  if (!updated) return;
  state.sites = state.sites.map((x) => (x.id === id ? updated : x));
  renderSites();
}

async function deleteSite(id) {
  const s = state.sites.find((x) => x.id === id);
  if (!s || !confirm(`Delete the site ${s.name}? Its key stops working at once; running sessions run on.`)) return;
  const done = await run(async () => { await api("DELETE", `/v1/sites/${enc(id)}`); return true; },
    `Site ${s.name} deleted.`);
  if (!done) return;
  if (state.embedSiteId === id) closeEmbed();
  if (fld($("#site-form"), "id").value === id) $("#site-form").hidden = true;
  await refreshSites();
}

// --------------------------------------------------------------------------- a site's webhooks

function openWebhooks(id, secret) {
  state.webhooksSiteId = id;
  state.webhookSecret = secret ? { siteId: id, secret } : null;
  state.deliveries = [];
  renderWebhooks();
  openPanel($("#webhooks"));
  refreshDeliveries();
  clearInterval(state.timers.deliveries);
  state.timers.deliveries = setInterval(() => {
    if (state.tab === "sites" && state.webhooksSiteId) refreshDeliveries(true);
  }, DELIVERIES_REFRESH_MS);
}

function closeWebhooks() {
  state.webhooksSiteId = null;
  state.webhookSecret = null; // forgotten: it is never shown again
  clearInterval(state.timers.deliveries);
  state.timers.deliveries = null;
  $("#webhook-secret").textContent = "";
  $("#webhooks").hidden = true;
}

function fmtDelivery(d) {
  if (d.status === "pending" && d.nextAttemptAt) return `next attempt ${fmtTime(d.nextAttemptAt)}`;
  if (d.status === "delivered") return `delivered ${fmtTime(d.deliveredAt)}`;
  return d.status;
}

function renderWebhooks() {
  const s = state.sites.find((x) => x.id === state.webhooksSiteId);
  if (!s) {
    closeWebhooks();
    return;
  }
  $("#webhooks-site-name").textContent = s.name;
  $("#webhooks-url").textContent = s.webhookUrl || "no webhook URL: edit the site to set one";
  const shown = state.webhookSecret && state.webhookSecret.siteId === s.id ? state.webhookSecret.secret : null;
  $("#webhook-secret-box").hidden = !shown;
  $("#webhook-secret").textContent = shown || "";
  const rows = state.deliveries.map((d) => h("tr", { dataset: { id: d.id, status: d.status, attempts: d.attempts } },
    h("td", {}, h("div", {}, d.event), h("code", { class: "muted small" }, d.id)),
    h("td", { class: `status-${d.status}` }, fmtDelivery(d)),
    h("td", { class: "attempts" }, String(d.attempts)),
    h("td", { class: "small" }, fmtTime(d.lastAttemptAt)),
    h("td", { class: "small error" }, d.lastError || (d.lastStatus != null ? `HTTP ${d.lastStatus}` : "—")),
    h("td", { class: "row-actions" },
      h("button", { type: "button", class: "secondary", "data-action": "redeliver",
        onclick: () => redeliver(s.id, d.id) }, "Redeliver"))));
  fillTable($("#deliveries-table"), rows, $("#deliveries-empty"));
}

async function refreshDeliveries(quiet = false) {
  const id = state.webhooksSiteId;
  if (!id) return;
  const load = () => api("GET", `/v1/sites/${enc(id)}/webhook-deliveries?limit=20`);
  const page = quiet ? await quietly(load) : await run(load);
  if (!page || state.webhooksSiteId !== id) return;
  state.deliveries = page.data || [];
  renderWebhooks();
}

async function redeliver(siteId, deliveryId) {
  const d = await run(() => api("POST", `/v1/sites/${enc(siteId)}/webhook-deliveries/${enc(deliveryId)}/redeliver`),
    (x) => `${x.event} ${x.id} will be delivered again (same webhook-id).`);
  if (d) await refreshDeliveries(true);
}

async function rotateWebhookSecret() {
  const id = state.webhooksSiteId;
  const s = state.sites.find((x) => x.id === id);
  if (!s || !confirm(`Replace the webhook secret of ${s.name}? Deliveries are signed with the new one from ` +
    "their next attempt; your backend needs it to check them.")) return;
  const updated = await run(() => api("POST", `/v1/sites/${enc(id)}/rotate-webhook-secret`),
    (x) => `New webhook secret for ${x.name}: copy it now, it is not shown again.`);
  if (!updated || state.webhooksSiteId !== id) return;
  state.webhookSecret = { siteId: id, secret: updated.webhookSecret };
  renderWebhooks();
}

function openEmbed(id) {
  state.embedSiteId = id;
  $("#site-form").hidden = true;
  renderEmbed();
  openPanel($("#embed"));
}

function closeEmbed() {
  state.embedSiteId = null;
  $("#embed").hidden = true;
}

function renderEmbed() {
  const s = state.sites.find((x) => x.id === state.embedSiteId);
  if (!s) {
    closeEmbed();
    return;
  }
  $("#embed-site-name").textContent = s.name;
  const select = $("#embed-avatar");
  const current = select.value;
  select.replaceChildren(...(s.avatarIds || []).map((id) => h("option", { value: id }, avatarName(id))));
  if ((s.avatarIds || []).includes(current)) select.value = current;
  $("#embed-snippet").value = embedSnippet(s, select.value);
}

export function embedSnippet(site, avatarId) {
  const server = location.origin;
  const attr = (v) => String(v).replace(/&/g, "&amp;").replace(/"/g, "&quot;");
  return `<script type="module" src="${server}/widget.js"></script>\n` +
    `<avatar-widget avatar="${attr(avatarId || "")}" key="${attr(site.publishableKey)}" server="${server}"` +
    `${site.maxDuration ? ` max-duration="${site.maxDuration}"` : ""}></avatar-widget>`;
}

async function copySnippet() {
  const area = $("#embed-snippet");
  try {
    await navigator.clipboard.writeText(area.value);
    showInfo("Embed snippet copied.");
  } catch {
    area.focus();
    area.select(); // the clipboard API needs a secure context; leave it selected for Ctrl+C
    showInfo("Snippet selected: press Ctrl+C (or ⌘C) to copy it.");
  }
}

// --------------------------------------------------------------------------- sessions

function sessionAvatarLabel(avatar) {
  if (!avatar) return "—";
  if (avatar.type === "custom") return avatarName(avatar.avatarId);
  if (avatar.type === "runway-preset") return `${avatar.presetId} (preset)`;
  return avatar.avatarId || avatar.presetId || JSON.stringify(avatar);
}

function siteName(id) {
  if (!id) return "admin API";
  const s = state.sites.find((x) => x.id === id);
  return s ? s.name : id;
}

function renderSessions() {
  const rows = state.sessions.map((s) => {
    const live = s.status !== "ENDED";
    return h("tr", { dataset: { id: s.id, status: s.status } },
      h("td", {}, h("code", { title: s.id }, s.id.slice(0, 8))),
      h("td", {}, h("span", { class: `status status-${s.status.toLowerCase()}` }, s.status),
        s.queued ? h("span", { class: "muted small queued" },
          s.position ? ` queued · #${s.position} in line${s.etaSeconds ? ` (${fmtWait(s.etaSeconds)})` : ""}`
            : " queued") : ""),
      h("td", {}, sessionAvatarLabel(s.avatar)),
      h("td", {}, siteName(s.siteId)),
      h("td", { class: "small" }, fmtTime(s.startedAt || s.createdAt)),
      h("td", { class: "countdown", dataset: { endsAt: live && s.endsAt ? s.endsAt : "" } },
        live ? (s.endsAt ? fmtLeft(s.endsAt) : `≤ ${s.maxDuration} s once started`) : "—"),
      h("td", {}, s.endReason ? h("span", { title: s.endMessage || "" }, s.endReason) : ""),
      h("td", { class: "row-actions" }, live
        ? h("button", { type: "button", class: "danger", "data-action": "end", onclick: () => endSession(s.id) },
          "End")
        : ""));
  });
  fillTable($("#sessions-table"), rows, $("#sessions-empty"));
}

function tickCountdowns() {
  for (const cell of document.querySelectorAll("#sessions-table td.countdown")) {
    if (cell.dataset.endsAt) cell.textContent = fmtLeft(cell.dataset.endsAt);
  }
}

let sessionsInFlight = false;

async function refreshSessions() {
  if (sessionsInFlight || !state.token) return;
  sessionsInFlight = true;
  try {
    const status = $("#sessions-status").value;
    const [page] = await Promise.all([
      quietly(() => api("GET", `/v1/sessions?status=${enc(status)}&limit=100`)),
      refreshRoom(),
    ]);
    if (page) {
      state.sessions = page.data || [];
      renderSessions();
    }
  } finally {
    sessionsInFlight = false;
  }
}

// --------------------------------------------------------------------------- the waiting room

function fmtWait(seconds) {
  const s = Math.round(Number(seconds));
  if (!Number.isFinite(s)) return "—";
  if (s < 90) return `~${Math.max(s, 0)} s`;
  if (s < 90 * 60) return `~${Math.round(s / 60)} min`;
  return `~${(s / 3600).toFixed(1)} h`;
}

async function refreshRoom() {
  let room;
  try {
    room = await api("GET", "/v1/waiting-room");
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      $("#room").hidden = true; // a server without a waiting room
      return;
    }
    if (!(err instanceof ApiError && err.status === 401)) showError(err);
    return;
  }
  state.room = room;
  $("#room").hidden = false;
  // a site created since the console loaded its list: look it up (once) to show its name
  const unknown = (room.lanes || []).map((l) => l.siteId)
    .filter((id) => id && !state.sites.some((s) => s.id === id) && !state.sitesAsked.has(id));
  if (unknown.length) {
    unknown.forEach((id) => state.sitesAsked.add(id));
    const sites = await quietly(() => listAll("/v1/sites"));
    if (sites) state.sites = sites;
  }
  renderRoom();
}

function renderRoom() {
  const r = state.room;
  if (!r) return;
  const set = (id, data, ...children) => {
    const el = $(id);
    el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== ""));
    for (const [k, v] of Object.entries(data)) el.dataset[k] = v === null || v === undefined ? "" : String(v);
  };
  set("#room-waiting", { waiting: r.waiting, size: r.size },
    h("strong", {}, fmtNum(r.waiting)), ` of ${fmtNum(r.size)} places`);

  const limit = r.upstreamLimit;
  set("#room-slots", { alive: r.upstreamAlive, limit: limit ?? "", learned: r.limitLearned },
    limit ? h("meter", { min: 0, max: limit, low: limit * 0.8, high: limit * 0.99, optimum: 0,
      value: Math.min(r.upstreamAlive, limit), title: `${r.upstreamAlive} of ${limit}` }) : null,
    limit ? `${fmtNum(r.upstreamAlive)} of ${fmtNum(limit)} in use` : `${fmtNum(r.upstreamAlive)} in use`,
    limit
      ? (r.limitLearned ? h("div", { class: "muted small" }, "limit learned from the upstream's first queued answer")
        : h("div", { class: "muted small" }, "limit configured"))
      : h("div", { class: "muted small" }, "limit not known yet (learned when the upstream first queues a session)"));

  const b = r.budget || {};
  set("#room-budget", { used: b.usedLastSecond, max: b.maxRps, waitingHere: b.waitingHere },
    h("meter", { min: 0, max: b.maxRps || 1, low: (b.maxRps || 1) * 0.8, high: (b.maxRps || 1) * 0.95, optimum: 0,
      value: Math.min(b.usedLastSecond || 0, b.maxRps || 1) }),
    `${fmtNum(b.usedLastSecond ?? 0)} of ${fmtNum(b.maxRps ?? 0)} requests per second`,
    h("div", { class: "muted small" }, b.waitingHere
      ? `${fmtNum(b.waitingHere)} request${b.waitingHere === 1 ? "" : "s"} of this instance waiting for the budget`
      : "upstream requests in the last second, all instances"));

  set("#room-eta", { eta: r.etaPerPlaceSeconds },
    `${fmtWait(r.etaPerPlaceSeconds)} per place`,
    h("div", { class: "muted small" }, "measured between starts served from the room"));

  set("#room-busy", { busy: r.busy || "" },
    r.busy ? h("span", { class: "busy-yes" }, `Yes: ${r.busy}`) : "No",
    h("div", { class: "muted small" }, r.busy ? "new starts get 503 server_busy" : "this instance accepts starts"));

  const lanes = (r.lanes || []).map((l) => h("tr", { dataset: { siteId: l.siteId ?? "", waiting: l.waiting } },
    h("td", { class: "name" }, siteName(l.siteId)),
    h("td", { class: "waiting" }, fmtNum(l.waiting))));
  fillTable($("#room-lanes"), lanes, $("#room-empty"));
  $("#room-lanes").hidden = lanes.length === 0;
}

async function endSession(id) {
  if (!confirm(`End the session ${id.slice(0, 8)}? The visitor is told it was ended by an admin.`)) return;
  const ended = await run(() => api("DELETE", `/v1/sessions/${enc(id)}`),
    (s) => `Session ${s.id.slice(0, 8)} ended (${s.endReason || s.status}).`);
  if (ended) await refreshSessions();
}

// --------------------------------------------------------------------------- conversations

const CONVERSATIONS_PAGE = 50;
const SITE_COLOURS = ["#1c7ed6", "#f08c00", "#2f9e44", "#ae3ec9", "#e03131", "#0c8599", "#5c940d", "#862e9c"];

function siteLabel(siteId) {
  if (!siteId) return "admin";
  const site = state.sites.find((x) => x.id === siteId);
  return site ? site.name : siteId.slice(0, 8);
}

function avatarLabel(avatar) {
  if (!avatar) return "—";
  if (avatar.type === "runway-preset") return avatar.presetId;
  const a = avatarById(avatar.avatarId);
  return a ? a.name : `custom ${String(avatar.avatarId).slice(0, 8)}`;
}

function fmtDuration(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function fillConversationFilters() {
  const site = $("#conversations-site");
  const keepSite = site.value;
  site.replaceChildren(h("option", { value: "" }, "all sites"), h("option", { value: "admin" }, "admin starts"),
    ...state.sites.map((x) => h("option", { value: x.id }, x.name)));
  site.value = [...site.options].some((o) => o.value === keepSite) ? keepSite : "";
  const avatar = $("#conversations-avatar");
  const keepAvatar = avatar.value;
  avatar.replaceChildren(h("option", { value: "" }, "all avatars"),
    ...state.avatars.map((a) => h("option", { value: a.id }, a.name)),
    ...SESSION_PRESETS.map((p) => h("option", { value: p }, `${p} (preset)`)));
  avatar.value = [...avatar.options].some((o) => o.value === keepAvatar) ? keepAvatar : "";
}

function conversationsQuery(cursor) {
  const q = new URLSearchParams({ limit: String(CONVERSATIONS_PAGE) });
  if ($("#conversations-site").value) q.set("siteId", $("#conversations-site").value);
  if ($("#conversations-avatar").value) q.set("avatarId", $("#conversations-avatar").value);
  if (cursor) q.set("cursor", cursor);
  return `/v1/conversations?${q}`;
}

async function refreshConversations(more = false) {
  fillConversationFilters();
  const page = await quietly(() => api("GET", conversationsQuery(more ? state.conversationsCursor : null)));
  if (!page) return;
  state.conversations = more ? [...state.conversations, ...page.data] : page.data;
  state.conversationsCursor = page.hasMore ? page.nextCursor : null;
  renderConversations();
}

function renderConversations() {
  const rows = state.conversations.map((c) => h("tr", { dataset: { id: c.id } },
    h("td", {}, fmtTime(c.startedAt)),
    h("td", {}, siteLabel(c.siteId)),
    h("td", {}, avatarLabel(c.avatar)),
    h("td", {}, fmtDuration(c.durationSeconds)),
    h("td", {}, c.endReason || "—"),
    h("td", {}, h("span", { class: `status status-${String(c.status).toLowerCase()}` }, c.status)),
    h("td", {}, String(c.turns)),
    h("td", { class: "actions" },
      h("button", { type: "button", class: "secondary", "data-action": "read", onclick: () => readConversation(c.id) }, "Read"),
      h("button", { type: "button", class: "danger", "data-action": "delete", onclick: () => deleteConversation(c.id) },
        "Delete"))));
  fillTable($("#conversations-table"), rows, $("#conversations-empty"));
  $("#conversations-more").hidden = !state.conversationsCursor;
}

async function readConversation(id) {
  const c = await run(() => api("GET", `/v1/conversations/${enc(id)}`));
  if (!c) return;
  state.transcriptId = c.id;
  $("#transcript-id").textContent = c.id;
  $("#transcript-meta").textContent = `${siteLabel(c.siteId)} · ${avatarLabel(c.avatar)} · ${fmtTime(c.startedAt)} · ` +
    `${fmtDuration(c.durationSeconds)} · ended: ${c.endReason} · ${c.status}` +
    (c.expiresAt ? ` · kept until ${fmtTime(c.expiresAt)}` : "");
  const turns = (c.transcript || []).map((t) => h("li", { class: `turn turn-${t.role}` },
    h("span", { class: "who" }, t.role === "user" ? "Visitor" : "Avatar"),
    h("time", { class: "muted small", datetime: t.timestamp || "" }, t.timestamp ? fmtTime(t.timestamp) : ""),
    h("p", {}, t.content ?? (t.toolCalls ? `(tool call: ${t.toolCalls.map((x) => x.name).join(", ")})` : "—"))));
  $("#transcript-turns").replaceChildren(...turns);
  $("#transcript-empty").hidden = turns.length > 0;
  openPanel($("#transcript"));
}

async function deleteConversation(id) {
  if (!confirm("Delete this conversation here and at the upstream? This cannot be undone.")) return;
  const done = await run(() => api("DELETE", `/v1/conversations/${enc(id)}`), (r) => (r.upstream === "refused"
    ? `Conversation deleted here; the upstream refused to delete its copy: ${r.upstreamMessage}`
    : `Conversation deleted (upstream: ${r.upstream}).`));
  if (!done) return;
  if (state.transcriptId === id) $("#transcript").hidden = true;
  state.conversations = state.conversations.filter((c) => c.id !== id);
  renderConversations();
}

// --------------------------------------------------------------------------- usage

function isoDay(d) {
  return d.toISOString().slice(0, 10);
}

function usageDefaults() {
  const form = $("#usage-form");
  if (fld(form, "to").value) return;
  const today = new Date();
  fld(form, "to").value = isoDay(today);
  fld(form, "from").value = isoDay(new Date(today.getTime() - 29 * 86400000));
}

async function refreshUsage(ev) {
  if (ev) ev.preventDefault();
  usageDefaults();
  const form = $("#usage-form");
  const q = new URLSearchParams({ from: fld(form, "from").value, to: fld(form, "to").value });
  const u = await run(() => api("GET", `/v1/usage?${q}`));
  if (u) renderUsage(u);
}

function renderUsage(u) {
  $("#usage-sessions").textContent = fmtNum(u.totalSessions);
  $("#usage-minutes").textContent = fmtNum(Math.round(u.totalSeconds / 6) / 10);
  $("#usage-average").textContent = fmtDuration(u.avgDurationSeconds);
  $("#usage-upstream").textContent = u.upstream
    ? `${fmtNum(u.upstream.totalSessions)} sessions, ${fmtNum(Math.round(u.upstream.totalSeconds / 6) / 10)} min`
    : `unavailable${u.upstreamError ? ` (${u.upstreamError})` : ""}`;
  fillTable($("#usage-sites"), u.bySite.map((x) => h("tr", {}, h("td", {}, siteLabel(x.siteId)),
    h("td", {}, fmtNum(x.sessions)), h("td", {}, fmtNum(Math.round(x.seconds / 6) / 10)))));
  fillTable($("#usage-reasons"), Object.entries(u.byEndReason).map(([r, n]) => h("tr", {}, h("td", {}, r),
    h("td", {}, fmtNum(n)))));
  drawUsageChart(u);
}

const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** Stacked bars: one per day, a segment per site (sessions), with the day's total above. */
function drawUsageChart(u) {
  const chart = $("#usage-chart");
  const W = 720, H = 220, left = 34, bottom = 24, top = 14;
  const days = u.byDay.map((d) => d.date);
  const max = Math.max(1, ...u.byDay.map((d) => d.sessions));
  const step = (W - left - 6) / Math.max(1, days.length);
  const bar = Math.max(2, step * 0.7);
  const y = (n) => H - bottom - (n / max) * (H - bottom - top);
  const parts = [svg("line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, stroke: "#adb5bd" }),
    svg("text", { x: left - 4, y: y(max) + 4, "text-anchor": "end", "font-size": 10 }, String(max)),
    svg("text", { x: left - 4, y: H - bottom + 4, "text-anchor": "end", "font-size": 10 }, "0")];
  const base = days.map(() => 0);
  u.bySite.forEach((site, i) => {
    const colour = SITE_COLOURS[i % SITE_COLOURS.length];
    site.byDay.forEach((d, j) => {
      if (!d.sessions) return;
      const y0 = y(base[j]), y1 = y(base[j] + d.sessions);
      base[j] += d.sessions;
      parts.push(svg("rect", { x: left + j * step + (step - bar) / 2, y: y1, width: bar, height: Math.max(1, y0 - y1),
        fill: colour, "data-site": site.siteId || "admin", "data-date": d.date, "data-sessions": d.sessions },
      svg("title", {}, `${siteLabel(site.siteId)} · ${d.date}: ${d.sessions} conversation(s), ${fmtDuration(d.seconds)}`)));
    });
  });
  const every = Math.ceil(days.length / 10);
  days.forEach((d, j) => {
    if (j % every === 0) {
      parts.push(svg("text", { x: left + j * step + step / 2, y: H - 8, "text-anchor": "middle", "font-size": 10 },
        d.slice(5)));
    }
  });
  chart.replaceChildren(...parts);
  $("#usage-legend").replaceChildren(...u.bySite.map((site, i) => h("li", {},
    h("span", { class: "swatch", "data-colour": SITE_COLOURS[i % SITE_COLOURS.length] }), siteLabel(site.siteId))));
  for (const sw of document.querySelectorAll("#usage-legend .swatch")) sw.style.background = sw.dataset.colour;
}

// --------------------------------------------------------------------------- custom voices (avatar form)

async function refreshVoices() {
  const voices = await quietly(() => listAll("/v1/voices"));
  if (voices) state.voices = voices;
  fillVoiceOptions();
}

function fillVoiceOptions() {
  const select = fld(avatarForm(), "voice");
  const keep = select.value;
  const presets = h("optgroup", { label: "Runway presets" }, ...VOICE_PRESETS.map((v) => h("option", { value: v }, v)));
  const custom = h("optgroup", { label: "Custom voices" }, ...state.voices.filter((v) => v.status !== "FAILED")
    .map((v) => h("option", { value: `custom:${v.id}` }, v.status === "READY" ? v.name : `${v.name} (processing)`)));
  select.replaceChildren(presets, ...(state.voices.length ? [custom] : []));
  if (keep) {
    if (keep.startsWith("custom:")) ensureOption(select, keep, `custom voice ${keep.slice(7)}`);
    select.value = keep;
  }
}

function voiceDraft() {
  const form = avatarForm();
  return { name: fld(form, "voiceName").value.trim(), prompt: fld(form, "voicePrompt").value.trim(),
    model: fld(form, "voiceModel").value };
}

async function previewVoice() {
  const { prompt, model } = voiceDraft();
  const p = await run(() => api("POST", "/v1/voices/preview", { prompt, model }));
  if (!p) return;
  const audio = $("#voice-preview");
  audio.src = p.url;
  audio.hidden = false;
  $("#voice-note").textContent = `A ${p.durationSecs.toFixed(1)} s sample.`;
}

async function createVoice() {
  const { name, prompt, model } = voiceDraft();
  const v = await run(() => api("POST", "/v1/voices", { name, from: { type: "text", prompt, model } }),
    (x) => `Voice ${x.name} created (${x.status}); it is selected for this avatar.`);
  if (!v) return;
  state.voices = [v, ...state.voices.filter((x) => x.id !== v.id)];
  fillVoiceOptions();
  fld(avatarForm(), "voice").value = `custom:${v.id}`;
  $("#voice-new").open = false;
}

// --------------------------------------------------------------------------- wiring

function wireCancel(panel, close) {
  for (const b of panel.querySelectorAll("[data-cancel]")) b.addEventListener("click", close);
}

function init() {
  const voice = $("#avatar-form select[name=voice]");
  voice.replaceChildren(...VOICE_PRESETS.map((v) => h("option", { value: v }, v)));

  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = $("#token").value.trim();
    if (token) await signIn(token);
  });
  $("#sign-out").addEventListener("click", () => { signOut(); showInfo("Signed out; the token was forgotten."); });
  for (const btn of document.querySelectorAll("[role=tab]")) {
    btn.addEventListener("click", () => { hideNotice(); selectTab(btn.dataset.tab); });
  }

  $("#avatar-new").addEventListener("click", newAvatar);
  $("#avatar-refresh").addEventListener("click", () => refreshAvatars());
  avatarForm().addEventListener("submit", saveAvatar);
  fld(avatarForm(), "imageFile").addEventListener("change", onImageFile);
  wireCancel(avatarForm(), () => { avatarForm().hidden = true; });
  $("#knowledge-link-form").addEventListener("submit", linkDocument);
  wireCancel($("#knowledge"), closeKnowledge);

  $("#document-new").addEventListener("click", newDocument);
  $("#document-refresh").addEventListener("click", refreshDocuments);
  $("#document-form").addEventListener("submit", saveDocument);
  fld($("#document-form"), "contentFile").addEventListener("change", onDocumentFile);
  wireCancel($("#document-form"), () => { $("#document-form").hidden = true; });

  $("#site-new").addEventListener("click", newSite);
  $("#site-refresh").addEventListener("click", refreshSites);
  $("#site-form").addEventListener("submit", saveSite);
  wireCancel($("#site-form"), () => { $("#site-form").hidden = true; });
  $("#embed-avatar").addEventListener("change", renderEmbed);
  $("#embed-copy").addEventListener("click", copySnippet);
  wireCancel($("#embed"), closeEmbed);
  $("#deliveries-refresh").addEventListener("click", () => refreshDeliveries());
  $("#webhook-rotate").addEventListener("click", rotateWebhookSecret);
  wireCancel($("#webhooks"), closeWebhooks);

  $("#sessions-status").addEventListener("change", refreshSessions);
  $("#session-refresh").addEventListener("click", refreshSessions);

  $("#conversations-site").addEventListener("change", () => refreshConversations());
  $("#conversations-avatar").addEventListener("change", () => refreshConversations());
  $("#conversations-refresh").addEventListener("click", () => refreshConversations());
  $("#conversations-more").addEventListener("click", () => refreshConversations(true));
  $("#transcript-delete").addEventListener("click", () => state.transcriptId && deleteConversation(state.transcriptId));
  wireCancel($("#transcript"), () => { $("#transcript").hidden = true; });
  $("#usage-form").addEventListener("submit", refreshUsage);
  $("#voice-preview-btn").addEventListener("click", previewVoice);
  $("#voice-create-btn").addEventListener("click", createVoice);

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
  else $("#token").focus();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
