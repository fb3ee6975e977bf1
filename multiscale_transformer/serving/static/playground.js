"use strict";
const $ = (id) => document.getElementById(id);
const state = { mode: "complete", props: null, controller: null, generated: "", split: 0 };
const SCALE_COLORS = ["var(--s0)", "var(--s1)", "var(--s2)", "var(--s3)"];
const PARAMS = ["temperature", "top_k", "top_p", "repetition_penalty", "frequency_penalty", "presence_penalty", "max_tokens"];
const INTEGER = new Set(["top_k", "max_tokens"]);

function apiKey() { return localStorage.getItem("axl-api-key") || ""; }
function headers() {
  const h = { "Content-Type": "application/json" };
  if (apiKey()) h["Authorization"] = "Bearer " + apiKey();
  return h;
}
async function api(path, body, signal) {
  const response = await fetch(path, body === undefined ? { headers: headers(), signal }
    : { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (response.status === 401) { $("key-panel").classList.add("shown"); throw new Error("this server needs an API key"); }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error.message || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function setStatus(text, isError) { $("status").textContent = text; $("status").className = isError ? "error" : ""; }

async function loadProps() {
  try {
    const props = await (await api("/props")).json();
    state.props = props;
    $("key-panel").classList.remove("shown");
    $("model-info").textContent = `${props.model}: ${(props.parameters / 1e6).toFixed(2)}M parameters, ` +
      `scales ${props.scales.map((k) => k + "x").join("/")}, context ${props.n_ctx} bytes` +
      (props.config.attention_window ? ` (byte attention window ${props.config.attention_window})` : "") +
      (props.fim ? ", fill-in-the-middle" : "");
    $("mode-infill").disabled = !props.fim;
    if (props.fim) $("mode-infill").title = `fill in at the cursor: at most ${props.infill_max_tokens} bytes (a quarter of the context)`;
    if (!props.fim) $("mode-infill").title = "this model was not trained for fill-in-the-middle";
    resetParams();
    $("legend").innerHTML = "";
    props.scales.forEach((k, s) => {
      const swatch = document.createElement("i"); swatch.style.background = SCALE_COLORS[s % 4];
      $("legend").append(swatch, document.createTextNode(k + "x"));
    });
  } catch (e) {
    if (String(e.message).includes("loading")) { setTimeout(loadProps, 1000); }
    $("model-info").textContent = e.message;
  }
  updateCurl();
}

function resetParams() {
  const d = state.props ? state.props.generation_defaults : {};
  for (const name of PARAMS) if (d[name] !== undefined) $(name).value = d[name];
  updateCurl();
}

function samplingFields() {
  const out = {};
  for (const name of PARAMS) {
    const raw = $(name).value.trim();
    if (raw !== "") out[name] = INTEGER.has(name) ? parseInt(raw, 10) : parseFloat(raw);
  }
  const seed = $("seed").value.trim();
  if (seed !== "") out.seed = parseInt(seed, 10);
  const stops = $("stop_strings").value.split("\n").filter((s) => s !== "");
  if (stops.length) out.stop = stops;
  return out;
}

function request() {
  const text = $("editor").value;
  if (state.mode === "inspect") return { path: "/v1/inspect", body: { text: text, top_logprobs: 5 } };
  const body = { model: state.props ? state.props.model : undefined, ...samplingFields(), stream: true,
                 stream_options: { include_usage: true } };
  if (state.mode === "infill") {
    const cursor = $("editor").selectionStart;
    body.prompt = text.slice(0, cursor);
    body.suffix = text.slice(cursor);
  } else {
    body.prompt = text;
  }
  return { path: "/v1/completions", body: body };
}

function shellQuote(s) { return "'" + s.replace(/'/g, "'\\''") + "'"; }
function updateCurl() {
  const r = request();
  const auth = apiKey() ? ` \\\n  -H "Authorization: Bearer $AXL_API_KEY"` : "";
  $("curl").textContent = `curl -N ${location.origin}${r.path} \\\n  -H 'Content-Type: application/json'${auth} \\\n  -d ${shellQuote(JSON.stringify(r.body))}`;
  $("curl").dataset.body = JSON.stringify(r.body);
  $("curl").dataset.path = r.path;
}

function setMode(mode) {
  state.mode = mode;
  for (const m of ["complete", "infill", "inspect"]) $("mode-" + m).setAttribute("aria-pressed", String(m === mode));
  $("run").textContent = { complete: "Complete", infill: "Infill", inspect: "Inspect" }[mode];
  $("inspect-panel").classList.toggle("shown", mode === "inspect");
  $("generate-panel").style.display = mode === "inspect" ? "none" : "";
  updateCurl();
}

function busy(on) {
  $("run").disabled = on; $("stop").disabled = !on;
  $("accept").disabled = on || !state.generated || state.mode === "inspect";
}

async function run() {
  updateCurl();
  const r = request();
  if (state.mode === "inspect") return inspect(r.body);
  state.generated = "";
  state.split = state.mode === "infill" ? $("editor").selectionStart : $("editor").value.length;
  const out = $("output"); out.textContent = "";
  const before = document.createElement("span"); before.className = "prefix";
  before.textContent = state.mode === "infill" ? r.body.prompt.slice(-400) : r.body.prompt;
  const generated = document.createElement("span"); generated.className = "generated"; generated.id = "generated";
  const after = document.createElement("span"); after.className = "suffix";
  after.textContent = state.mode === "infill" ? r.body.suffix.slice(0, 400) : "";
  out.append(before, generated, after);
  state.controller = new AbortController();
  busy(true); setStatus("generating...");
  const started = performance.now();
  let finish = null, usage = null;
  try {
    const response = await api(r.path, r.body, state.controller.signal);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices) {
          state.generated += choice.text;
          if (choice.finish_reason) finish = choice.finish_reason;
        }
        generated.textContent = state.generated;
      }
    }
    const seconds = (performance.now() - started) / 1000;
    const n = usage ? usage.completion_tokens : new TextEncoder().encode(state.generated).length;
    const cap = state.mode === "infill" && finish === "length" && state.props
      ? ` (an infilling writes at most ${state.props.infill_max_tokens} bytes, a quarter of the ${state.props.n_ctx}-byte context)` : "";
    setStatus(`done (${finish || "end"}): ${n} bytes in ${seconds.toFixed(1)} s, ${(n / seconds).toFixed(0)} bytes/s${cap}`);
    out.dataset.done = "true";
  } catch (e) {
    if (e.name === "AbortError") setStatus(`stopped after ${new TextEncoder().encode(state.generated).length} bytes`);
    else setStatus(e.message, true);
    out.dataset.done = "true";
  } finally {
    state.controller = null;
    busy(false);
  }
}

function stop() { if (state.controller) state.controller.abort(); }

function accept() {
  const editor = $("editor");
  editor.value = editor.value.slice(0, state.split) + state.generated + editor.value.slice(state.split);
  editor.selectionStart = editor.selectionEnd = state.split + state.generated.length;
  state.generated = ""; busy(false); updateCurl();
}

function utf8Length(lead) { return lead < 0x80 ? 1 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1; }
function shownByte(b) {
  if (b === 0x20) return " ";
  if (b === 0x0a) return "\u23ce";
  if (b === 0x09) return "\u21e5   ";
  if (b < 0x20 || b === 0x7f) return "\u00b7";
  return String.fromCharCode(b);
}
function heat(bits) { return `rgba(230, 50, 20, ${Math.min(bits / 8, 1).toFixed(3)})`; }
function tokenLabel(t) {
  if (t === " ") return "\u2423";
  if (t === "\n") return "\\n";
  if (t === "\t") return "\\t";
  if (t.length === 1 && (t.charCodeAt(0) < 0x20 || t.charCodeAt(0) === 0x7f)) return "\\x" + t.charCodeAt(0).toString(16).padStart(2, "0");
  return t.startsWith("bytes:") ? t.slice(6) : t;
}

async function inspect(body) {
  busy(true); setStatus("inspecting...");
  const started = performance.now();
  try {
    const result = await (await api("/v1/inspect", body)).json();
    renderInspection(result);
    setStatus(`inspected ${result.bytes} bytes in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    busy(false);
  }
}

function renderInspection(result) {
  const view = $("inspect-view"); view.textContent = "";
  const ids = result.tokens.map((t) => t.id);
  const decoder = new TextDecoder();
  const mean = result.scales.map(() => 0);
  let i = 0;
  const fragment = document.createDocumentFragment();
  while (i < ids.length) {
    const n = Math.min(utf8Length(ids[i]), ids.length - i);
    const text = ids[i] < 0x80 ? shownByte(ids[i]) : decoder.decode(new Uint8Array(ids.slice(i, i + n)));
    for (let j = i; j < i + n; j++) {
      const t = result.tokens[j];
      const cell = document.createElement("span"); cell.className = "cell";
      const byte = document.createElement("span");
      byte.className = "byte" + (j > i ? " cont" : "") + (ids[j] < 0x20 || ids[j] === 0x7f ? " ctl" : "");
      byte.textContent = j === i ? text : "";
      byte.style.background = heat(t.bits);
      byte.dataset.i = String(j);
      const gate = document.createElement("span"); gate.className = "gate";
      t.shares.forEach((g, s) => {
        const part = document.createElement("i"); part.style.height = (g * 100).toFixed(1) + "%";
        part.style.background = SCALE_COLORS[s % 4]; gate.append(part); mean[s] += g / ids.length;
      });
      cell.append(byte, gate); fragment.append(cell);
      if (ids[j] === 0x0a) { const br = document.createElement("span"); br.className = "br"; fragment.append(br); }
    }
    i += n;
  }
  view.append(fragment);
  state.inspection = result;
  const shares = result.scales.map((k, s) => `${k}x ${(mean[s] * 100).toFixed(0)}%`).join(", ");
  $("inspect-summary").innerHTML = "";
  const summary = document.createElement("span");
  summary.textContent = `${result.bytes} bytes: ${result.bits_per_byte.toFixed(3)} bits/byte by the model, ` +
    `${result.gzip_bits_per_byte.toFixed(3)} by gzip -9 on the same text; mean scale share: ${shares}`;
  summary.id = "bits-per-byte"; summary.dataset.value = String(result.bits_per_byte);
  $("inspect-summary").append(summary);
}

function showTip(event) {
  const target = event.target.closest(".byte");
  const tip = $("tip");
  if (!target || !state.inspection) { tip.style.display = "none"; return; }
  const t = state.inspection.tokens[Number(target.dataset.i)];
  const lines = [`byte ${Number(target.dataset.i)}: ${tokenLabel(t.token)} (0x${t.id.toString(16).padStart(2, "0")})`,
    `${t.bits.toFixed(2)} bits, p = ${(Math.exp(t.logprob) * 100).toFixed(1)}%`, "expected:"];
  for (const alt of t.top_logprobs) lines.push(`  ${tokenLabel(alt.token).padEnd(12)} ${(Math.exp(alt.logprob) * 100).toFixed(1)}%`);
  lines.push("scale share: " + state.inspection.scales.map((k, s) => `${k}x ${(t.shares[s] * 100).toFixed(0)}%`).join("  "));
  lines.push("fusion gate: " + state.inspection.scales.map((k, s) => `${k}x ${(t.gates[s] * 100).toFixed(0)}%`).join("  "));
  tip.textContent = lines.join("\n"); tip.style.whiteSpace = "pre";
  tip.style.display = "block";
  tip.style.left = Math.min(event.clientX + 12, window.innerWidth - 360) + "px";
  tip.style.top = event.clientY + 16 + "px";
}

$("mode-complete").onclick = () => setMode("complete");
$("mode-infill").onclick = () => setMode("infill");
$("mode-inspect").onclick = () => setMode("inspect");
$("run").onclick = run;
$("stop").onclick = stop;
$("accept").onclick = accept;
$("reset-params").onclick = resetParams;
$("copy-curl").onclick = () => navigator.clipboard.writeText($("curl").textContent).catch(() => {});
$("save-key").onclick = () => { localStorage.setItem("axl-api-key", $("api-key").value.trim()); loadProps(); };
$("inspect-view").addEventListener("mousemove", showTip);
$("inspect-view").addEventListener("mouseleave", () => { $("tip").style.display = "none"; });
$("file").onchange = async (e) => { const f = e.target.files[0]; if (f) { $("editor").value = await f.text(); updateCurl(); } };
for (const el of document.querySelectorAll("aside input, aside textarea, #editor")) el.addEventListener("input", updateCurl);
$("editor").addEventListener("keyup", updateCurl);
$("editor").addEventListener("click", updateCurl);
$("editor").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); } });
loadProps();
