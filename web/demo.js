// The demo page: reads the demo site's publishable key from /demo/config.json (public by
// design) and drives one <avatar-widget>. No inline scripts (the page's CSP allows none).

const widget = document.getElementById("widget");
const select = document.getElementById("avatar");
const state = document.getElementById("state");
const notice = document.getElementById("notice");
const snippet = document.getElementById("snippet");

function showNotice(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

function renderSnippet(key, avatar) {
  const server = new URL(".", location.href).href.replace(/\/+$/, "");
  snippet.textContent =
    `<script type="module" src="${server}/widget.js"></script>\n` +
    `<avatar-widget avatar="${avatar}" key="${key}"></avatar-widget>`;
}

async function main() {
  let config;
  try {
    const resp = await fetch(new URL("demo/config.json", location.href), { cache: "no-store" });
    config = await resp.json();
    if (!resp.ok) throw new Error((config.error && config.error.message) || `HTTP ${resp.status}`);
  } catch (err) {
    select.replaceChildren(new Option("unavailable"));
    showNotice(`The demo is not available: ${err.message}`);
    return;
  }
  select.replaceChildren(...config.avatars.map((a) => new Option(a.name, a.id)));
  const preferred = config.avatars.find((a) => a.id === "cooking-teacher") || config.avatars[0];
  if (preferred) select.value = preferred.id;
  select.disabled = false;
  widget.setAttribute("key", config.publishableKey);
  widget.setAttribute("avatar", select.value);
  renderSnippet("pk_…", select.value);
  if (!config.allowedOrigins.includes(location.origin)) {
    const other = config.allowedOrigins[0];
    showNotice(`This page was opened at ${location.origin}, which the demo site does not allow. ` +
      `Open ${other}/demo instead, or set AVATAR_SERVER_PUBLIC_URL.`);
  }
  select.addEventListener("change", async () => {
    if (!["idle", "ended"].includes(widget.status)) await widget.end();
    widget.setAttribute("avatar", select.value);
    renderSnippet("pk_…", select.value);
  });
}

widget.addEventListener("avatar-status", (ev) => {
  const { status, message } = ev.detail;
  select.disabled = !["idle", "ended"].includes(status) && status !== "playing";
  state.textContent = status === "playing" ? "Talking — speak, or type below the video." : message || "";
});
widget.addEventListener("avatar-ended", (ev) => {
  state.textContent = ev.detail.message;
  select.disabled = false;
});

main();
