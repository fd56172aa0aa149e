// The playground: three panels on the public API, nothing else (no CDN, no build step).
// Every request goes through `api()`, which sends the optional API key and turns an error
// answer into the API's own message; images are fetched the same way, so they work with keys.
"use strict";

const KEY_STORE = "genserve-api-key";
const keyInput = document.getElementById("api-key");

function headers(extra = {}) {
  const key = keyInput.value.trim();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

async function api(path, { method = "GET", body, params } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== "" && value !== null && value !== undefined) url.searchParams.set(name, value);
  }
  const response = await fetch(url, { method, body, headers: headers({ Accept: "application/json" }) });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const detail = data && data.detail ? data.detail : `${response.status} ${response.statusText}`;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return data;
}

async function imageURL(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${response.statusText}`);
  return URL.createObjectURL(await response.blob());
}

// Server-Sent Events over fetch (EventSource cannot send an API key header).
async function* events(path, signal) {
  const response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try { detail = (await response.json()).detail || detail; } catch { /* not JSON */ }
    throw new Error(detail);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { name, data: JSON.parse(data.join("\n")) };
    }
  }
}

function panel(id) {
  const root = document.getElementById(id);
  const error = root.querySelector(".error");
  const meta = root.querySelector(".meta");
  return {
    root,
    form: root.querySelector("form"),
    fail(err) { error.textContent = err.message || String(err); error.hidden = false; },
    clear() { error.hidden = true; error.textContent = ""; meta.textContent = ""; },
    say(text) { meta.textContent = text; },
  };
}

function formValues(form) {
  return Object.fromEntries([...new FormData(form)].filter(([, v]) => typeof v === "string"));
}

async function busy(button, work) {
  button.disabled = true;
  try { await work(); } finally { button.disabled = false; }
}

// -- faces ------------------------------------------------------------------------------------
const faces = panel("faces");
faces.form.addEventListener("submit", (event) => {
  event.preventDefault();
  faces.clear();
  const grid = faces.root.querySelector(".grid");
  busy(faces.form.querySelector("button[type=submit]"), async () => {
    try {
      let job = await api("/generate/faces", { method: "POST", params: { ...formValues(faces.form), wait: 60 } });
      while (job.status === "queued" || job.status === "running") {
        job = await api(job.url, { params: { wait: 30 } });
      }
      if (job.status !== "succeeded") throw new Error(job.error || `the job ended ${job.status}`);
      grid.src = await imageURL(job.result.grid.url);
      grid.hidden = false;
      faces.say(`${job.result.n} faces of model ${job.result.model}, seed ${job.result.seed}, ` +
        `${(job.result.compute_s * 1000).toFixed(0)} ms in the model`);
    } catch (err) { faces.fail(err); }
  });
});

// -- digits -----------------------------------------------------------------------------------
const digits = panel("digits");
// How long each frame took from the worker's drawing to this page (the browser tests read it).
const stats = (window.playgroundStats = { frameDelaysMs: [] });
const cancelButton = digits.root.querySelector(".cancel");
let running = null; // { id, controller } of the job this page follows

async function loadSamplers() {
  // One home for the sampler names: the API's own schema.
  try {
    const spec = await api("/openapi.json");
    const param = spec.paths["/generate/digits"].post.parameters.find((p) => p.name === "sampler");
    const names = (param.schema.anyOf || [param.schema]).find((s) => s.enum).enum;
    const select = digits.form.elements.sampler;
    for (const name of names) select.add(new Option(name, name));
  } catch (err) { digits.fail(new Error(`could not read the sampler list: ${err.message}`)); }
}

function addFrame(strip, t, src) {
  const figure = document.createElement("figure");
  const img = document.createElement("img");
  img.src = src;
  img.alt = `t = ${t}`;
  img.dataset.t = t;
  const caption = document.createElement("figcaption");
  caption.textContent = `t = ${t}`;
  figure.append(img, caption);
  strip.append(figure);
}

digits.form.addEventListener("submit", (event) => {
  event.preventDefault();
  digits.clear();
  const root = digits.root;
  const bar = root.querySelector("progress");
  const framesBox = root.querySelector(".frames");
  const strip = root.querySelector(".strip");
  const grid = root.querySelector(".grid");
  const animation = root.querySelector(".animation");
  strip.replaceChildren();
  grid.hidden = animation.hidden = true;
  bar.value = 0;
  bar.hidden = false;
  framesBox.hidden = false;
  busy(root.querySelector("button[type=submit]"), async () => {
    const controller = new AbortController();
    try {
      const params = { ...formValues(digits.form), frames: true, animation: true, wait: 0 };
      const job = await api("/generate/digits", { method: "POST", params });
      running = { id: job.id, controller };
      cancelButton.disabled = false;
      digits.say(`job ${job.id}: ${job.status}`);
      let last = job;
      for await (const { name, data } of events(`${job.url}/events`, controller.signal)) {
        if (name === "status") { digits.say(`job ${data.id}: ${data.status}`); last = data; }
        else if (name === "progress") { bar.max = data.total; bar.value = data.step; }
        else if (name === "frame") {
          addFrame(strip, data.t, data.image);
          stats.frameDelaysMs.push(Date.now() - data.drawn_at * 1000);
        }
        else if (name === "done") { last = data; break; }
      }
      if (last.status === "canceled") { digits.say(`job ${last.id} was canceled`); return; }
      if (last.status !== "succeeded") throw new Error(last.error || `the job ended ${last.status}`);
      const r = last.result;
      bar.value = bar.max;
      grid.src = await imageURL(r.grid.url);
      grid.hidden = false;
      if (r.animation) { animation.src = await imageURL(r.animation.url); animation.hidden = false; }
      digits.say(`${r.images.length} digits, ${r.sampler} ${r.steps} steps, guidance ${r.guidance}, ` +
        `${r.nfe} network evaluations per image, seed ${r.seed}, ${r.compute_s.toFixed(2)} s in the model`);
    } catch (err) {
      if (err.name !== "AbortError") digits.fail(err);
    } finally {
      running = null;
      cancelButton.disabled = true;
    }
  });
});

cancelButton.addEventListener("click", async () => {
  if (!running) return;
  cancelButton.disabled = true;
  const id = running.id;
  try {
    const job = await api(`/jobs/${id}/cancel`, { method: "POST" });
    // The event stream may have ended the job's story already: only say what is still news.
    if (running && running.id === id) digits.say(`job ${id}: stopping (${job.status})`);
  } catch (err) { digits.fail(err); }
});

// -- classify ---------------------------------------------------------------------------------
const classify = panel("classify");
const drop = classify.root.querySelector(".drop");
const fileInput = classify.form.elements.files;
const canvas = classify.root.querySelector("canvas");
const pen = canvas.getContext("2d");

function blankCanvas() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, canvas.width, canvas.height);
}
blankCanvas();

let drawing = false;
function point(event) {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
}
canvas.addEventListener("pointerdown", (event) => {
  drawing = true;
  canvas.setPointerCapture(event.pointerId);
  pen.strokeStyle = "#fff";
  pen.lineWidth = 22;
  pen.lineCap = pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(...point(event));
});
canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  pen.lineTo(...point(event));
  pen.stroke();
});
canvas.addEventListener("pointerup", () => { drawing = false; });
classify.root.querySelector(".clear").addEventListener("click", blankCanvas);

function bars(probabilities) {
  const top = probabilities.indexOf(Math.max(...probabilities));
  const box = document.createElement("div");
  const plot = document.createElement("div");
  plot.className = "bars";
  const axis = document.createElement("div");
  axis.className = "bars-axis";
  probabilities.forEach((p, digit) => {
    const bar = document.createElement("span");
    bar.style.height = `${Math.max(p * 100, 1)}%`;
    bar.title = `${digit}: ${(p * 100).toFixed(1)}%`;
    bar.dataset.digit = digit;
    if (digit === top) bar.className = "top";
    plot.append(bar);
    const tick = document.createElement("span");
    tick.textContent = digit;
    axis.append(tick);
  });
  box.append(plot, axis);
  return box;
}

async function classifyFiles(files) {
  classify.clear();
  const list = classify.root.querySelector(".predictions");
  list.replaceChildren();
  if (!files.length) return;
  const body = new FormData();
  for (const file of files) body.append("files", file, file.name);
  const target = classify.form.elements.target.value;
  try {
    let job = await api("/classify/target-domain", { method: "POST", body, params: { target, wait: 60 } });
    while (job.status === "queued" || job.status === "running") job = await api(job.url, { params: { wait: 30 } });
    if (job.status !== "succeeded") throw new Error(job.error || `the job ended ${job.status}`);
    job.result.predictions.forEach((prediction, index) => {
      const item = document.createElement("li");
      const img = document.createElement("img");
      img.src = URL.createObjectURL(files[index]);
      img.alt = prediction.image_name;
      const text = document.createElement("div");
      text.innerHTML = `<span class="label"></span> <span class="name"></span>`;
      text.querySelector(".label").textContent = prediction.label;
      text.querySelector(".name").textContent = prediction.image_name;
      text.append(bars(prediction.probabilities));
      item.append(img, text);
      list.append(item);
    });
    classify.say(`${job.result.predictions.length} image(s), ${target.toUpperCase()} model ${job.result.checkpoint}`);
  } catch (err) { classify.fail(err); }
}

fileInput.addEventListener("change", () => classifyFiles([...fileInput.files]));
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  classifyFiles([...event.dataTransfer.files]);
});
classify.root.querySelector(".classify-drawing").addEventListener("click", () => {
  canvas.toBlob((blob) => classifyFiles([new File([blob], "drawing.png", { type: "image/png" })]), "image/png");
});
classify.form.addEventListener("submit", (event) => event.preventDefault());

// -- start ------------------------------------------------------------------------------------
keyInput.value = localStorage.getItem(KEY_STORE) || "";
keyInput.addEventListener("change", () => localStorage.setItem(KEY_STORE, keyInput.value.trim()));
loadSamplers();
