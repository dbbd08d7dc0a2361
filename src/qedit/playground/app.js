// The Playground: a client of qedit's public API (/v1/edits), nothing more.
// Inputs are checked here against the limits the server publishes (/v1/playground/config) so a
// person learns what is wrong before anything is sent; the server checks everything again.

const STRINGS = {
  en: {
    title: "qedit Playground", api_docs: "API docs", language: "Language", new_edit: "New edit",
    api_key: "API key", drop: "Drop 1-3 images here, paste, or choose files",
    mask: "Mask (paint where it may change)", brush: "Brush", eraser: "Eraser", brush_tool: "Paint",
    rect: "Rectangle", box: "Region box", copy_python: "Copy as Python", undo: "Undo", clear: "Clear",
    instruction: "Instruction", options: "Options", negative: "Negative prompt", steps: "Steps",
    cfg: "Guidance (CFG)", seed: "Seed", reuse_seed: "Reuse last seed", size: "Size", format: "Format",
    count: "Images", fast: "Fast (Lightning)", off: "off", edit: "Edit", cancel: "Cancel", result: "Result",
    download: "Download", edit_result: "Edit this result", copy_curl: "Copy as curl", chain_steps: "Steps of this chain",
    history: "History", limits: "{formats}; {min}-{max} px a side; up to {mb} MB each; at most {n}",
    counters: "{running} running · {completed} completed", no_history: "No edits yet",
    bad_format: "{name}: not a supported image ({formats})", too_big: "{name}: {mb} MB, at most {max} MB allowed",
    bad_side: "{name}: {w}x{h} px, each side must be {min}-{max} px", too_many: "at most {n} images",
    need_image: "add an image first", need_prompt: "write an instruction first", need_key: "enter your API key",
    step: "step {step}/{total}", eta: "about {s} s left", queued: "queued", copied: "copied",
    failed: "failed: {reason}", cancelled: "cancelled", reopen: "Reopen", seed_used: "seed {seed}",
  },
  zh: {
    title: "qedit 在线试用", api_docs: "API 文档", language: "语言", new_edit: "新建编辑",
    api_key: "API 密钥", drop: "拖入 1-3 张图片，粘贴，或选择文件",
    mask: "蒙版（涂抹允许修改的区域）", brush: "画笔", eraser: "橡皮擦", brush_tool: "涂抹",
    rect: "矩形", box: "区域框", copy_python: "复制为 Python", undo: "撤销", clear: "清除",
    instruction: "编辑指令", options: "选项", negative: "反向提示词", steps: "步数",
    cfg: "引导强度 (CFG)", seed: "随机种子", reuse_seed: "沿用上次种子", size: "尺寸", format: "格式",
    count: "图片数量", fast: "快速 (Lightning)", off: "关闭", edit: "编辑", cancel: "取消", result: "结果",
    download: "下载", edit_result: "继续编辑此结果", copy_curl: "复制为 curl", chain_steps: "此编辑链的步骤",
    history: "历史记录", limits: "{formats}；每边 {min}-{max} 像素；每张不超过 {mb} MB；最多 {n} 张",
    counters: "{running} 个进行中 · {completed} 个已完成", no_history: "还没有编辑记录",
    bad_format: "{name}：不支持的图片格式（{formats}）", too_big: "{name}：{mb} MB，最大 {max} MB",
    bad_side: "{name}：{w}x{h} 像素，每边必须在 {min}-{max} 像素之间", too_many: "最多 {n} 张图片",
    need_image: "请先添加图片", need_prompt: "请先填写编辑指令", need_key: "请输入 API 密钥",
    step: "第 {step}/{total} 步", eta: "约剩 {s} 秒", queued: "排队中", copied: "已复制",
    failed: "失败：{reason}", cancelled: "已取消", reopen: "重新打开", seed_used: "种子 {seed}",
  },
};
const EXTENSIONS = ["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff"];
const $ = (id) => document.getElementById(id);
const state = { config: null, lang: "en", images: [], last: null, lastSeed: null, chain: [], running: null, strokes: [] };

function t(key, vars = {}) {
  const text = (STRINGS[state.lang] || STRINGS.en)[key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

function applyLanguage(lang) {
  state.lang = STRINGS[lang] ? lang : "en";
  localStorage.setItem("qedit.lang", state.lang);
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  $("lang").value = state.lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  showLimits();
  refreshHistory();
}

function megabytes(bytes) {
  const mb = bytes / 1048576;
  return mb < 10 ? mb.toFixed(1) : String(Math.round(mb));
}

function say(text) { $("message").textContent = text || ""; }

function headers(json = true) {
  const h = json ? { "content-type": "application/json" } : {};
  const key = $("key").value.trim();
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

async function api(path, options = {}) {
  const r = await fetch(path, { ...options, headers: { ...headers(options.body !== undefined), ...(options.headers || {}) } });
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error(body?.error?.message || body?.message || `HTTP ${r.status}`);
  return body;
}

function showLimits() {
  const c = state.config;
  if (!c) return;
  $("limits").textContent = t("limits", {
    formats: c.formats, min: c.min_side, max: c.max_side, mb: megabytes(c.max_input_bytes), n: c.max_images,
  });
}

// -- inputs ------------------------------------------------------------------------------------

function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      const img = new Image();
      img.onload = () => resolve({ name: file.name, url: reader.result, width: img.naturalWidth, height: img.naturalHeight });
      img.onerror = () => reject(new Error(t("bad_format", { name: file.name, formats: state.config.formats })));
      img.src = reader.result;
    };
    reader.onerror = () => reject(new Error(t("bad_format", { name: file.name, formats: state.config.formats })));
    reader.readAsDataURL(file);
  });
}

async function addFiles(files) {
  const c = state.config;
  say("");
  for (const file of files) {
    const ext = (file.name.split(".").pop() || "").toLowerCase();
    if (!EXTENSIONS.includes(ext) && !/^image\/(jpeg|png|bmp|webp|tiff)$/.test(file.type)) {
      return say(t("bad_format", { name: file.name, formats: c.formats }));
    }
    if (file.size > c.max_input_bytes) {
      return say(t("too_big", { name: file.name, mb: megabytes(file.size), max: megabytes(c.max_input_bytes) }));
    }
    if (state.images.length >= c.max_images) return say(t("too_many", { n: c.max_images }));
    let image;
    try { image = await readImage(file); } catch (e) { return say(e.message); }
    for (const side of [image.width, image.height]) {
      if (side < c.min_side || side > c.max_side) {
        return say(t("bad_side", { name: file.name, w: image.width, h: image.height, min: c.min_side, max: c.max_side }));
      }
    }
    state.images.push(image);
  }
  renderThumbs();
}

function renderThumbs() {
  const list = $("thumbs");
  list.replaceChildren();
  state.images.forEach((image, i) => {
    const li = document.createElement("li");
    const img = document.createElement("img");
    img.src = image.preview || image.url;
    img.alt = image.name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `remove ${image.name}`);
    remove.onclick = () => { state.images.splice(i, 1); renderThumbs(); };
    li.append(img, remove);
    list.append(li);
  });
  setupMask();
}

// -- mask painting: white where the edit may change ----------------------------------------------

function setupMask() {
  const last = state.images[state.images.length - 1];
  $("mask-tools").hidden = $("canvas-wrap").hidden = !last;
  state.strokes = [];
  if (!last) return;
  const canvas = $("mask-canvas");
  $("base").src = last.preview || last.url;
  canvas.width = last.width;
  canvas.height = last.height;
  redrawMask();
}


function tool() {
  return document.querySelector("#mask-tools [data-tool][aria-pressed='true']")?.dataset.tool || "brush";
}

function paint(ctx, strokes, colour) {
  // strokes: brush paths and filled rectangles; an eraser stroke removes what is under it
  for (const s of strokes) {
    ctx.globalCompositeOperation = s.erase ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = colour;
    if (s.rect) {
      const [x0, y0, x1, y1] = s.rect;
      ctx.fillRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
      continue;
    }
    ctx.lineWidth = s.size;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    s.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (s.points.length === 1) ctx.lineTo(s.points[0][0] + 0.1, s.points[0][1]);
    ctx.stroke();
  }
  ctx.globalCompositeOperation = "source-over";
}

function redrawMask() {
  const canvas = $("mask-canvas");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  paint(ctx, state.strokes.filter((a) => !a.box), "#ff3b30");
  for (const b of state.strokes.filter((a) => a.box)) {
    ctx.strokeStyle = b.colour;
    ctx.lineWidth = Math.max(3, canvas.width / 150);
    ctx.strokeRect(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0);
  }
}

function boxes() {
  return state.strokes.filter((a) => a.box).map(({ x0, y0, x1, y1, colour }) => ({ x0, y0, x1, y1, colour }));
}

function maskDataUri() {
  const strokes = state.strokes.filter((a) => !a.box);
  if (!strokes.some((s) => !s.erase)) return null;
  const painted = document.createElement("canvas");
  painted.width = $("mask-canvas").width;
  painted.height = $("mask-canvas").height;
  paint(painted.getContext("2d"), strokes, "#fff");
  const out = document.createElement("canvas");
  out.width = painted.width;
  out.height = painted.height;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "#000";  // black: kept as it is
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.drawImage(painted, 0, 0);  // white: may change
  return out.toDataURL("image/png");
}

function bindMask() {
  const canvas = $("mask-canvas");
  let current = null;
  const point = (e) => {
    const box = canvas.getBoundingClientRect();
    const x = ((e.clientX - box.left) * canvas.width) / box.width;
    const y = ((e.clientY - box.top) * canvas.height) / box.height;
    return [Math.max(0, Math.min(canvas.width, x)), Math.max(0, Math.min(canvas.height, y))];
  };
  canvas.addEventListener("pointerdown", (e) => {
    const [x, y] = point(e);
    const erase = $("eraser").getAttribute("aria-pressed") === "true";
    const mode = tool();
    if (mode === "box") current = { box: true, x0: x, y0: y, x1: x, y1: y, colour: $("box-colour").value, start: [x, y] };
    else if (mode === "rect") current = { rect: [x, y, x, y], erase };
    else current = { erase, size: (Number($("brush").value) * canvas.width) / canvas.getBoundingClientRect().width, points: [[x, y]] };
    state.strokes.push(current);
    canvas.setPointerCapture(e.pointerId);
    redrawMask();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!current) return;
    const [x, y] = point(e);
    if (current.box) {
      const [sx, sy] = current.start;
      Object.assign(current, { x0: Math.round(Math.min(sx, x)), y0: Math.round(Math.min(sy, y)), x1: Math.round(Math.max(sx, x)), y1: Math.round(Math.max(sy, y)) });
    } else if (current.rect) current.rect = [current.rect[0], current.rect[1], x, y];
    else current.points.push([x, y]);
    redrawMask();
  });
  canvas.addEventListener("pointerup", () => {
    if (current?.box && (current.x1 - current.x0 < 2 || current.y1 - current.y0 < 2)) state.strokes.pop();  // a click, not a box
    delete current?.start;
    current = null;
    redrawMask();
  });
  for (const button of document.querySelectorAll("#mask-tools [data-tool]")) {
    button.onclick = () => {
      for (const other of document.querySelectorAll("#mask-tools [data-tool]")) other.setAttribute("aria-pressed", String(other === button));
    };
  }
  $("eraser").onclick = () => {
    const on = $("eraser").getAttribute("aria-pressed") !== "true";
    $("eraser").setAttribute("aria-pressed", String(on));
  };
  $("undo").onclick = () => { state.strokes.pop(); redrawMask(); };
  $("clear").onclick = () => { state.strokes = []; redrawMask(); };
}

// -- submit, progress, result --------------------------------------------------------------------

function requestBody() {
  const body = { prompt: $("prompt").value, images: state.images.map((i) => i.source || i.url) };
  const negative = $("negative").value;
  if (negative) body.negative_prompt = negative;
  if ($("steps").value) body.num_inference_steps = Number($("steps").value);
  if ($("cfg").value) body.true_cfg_scale = Number($("cfg").value);
  body.seed = Number($("seed").value || -1);
  const size = $("size").value.trim();
  if (size && size !== "auto") body.size = size;
  body.output_format = $("format").value;
  body.num_images = Number($("count").value || 1);
  if ($("fast").value) body.fast = Number($("fast").value);
  const mask = maskDataUri();
  if (mask) body.mask = mask;
  const regions = boxes();
  if (regions.length) body.boxes = regions;
  return body;
}

async function submit() {
  say("");
  if (state.config.auth && !$("key").value.trim()) return say(t("need_key"));
  if (!state.images.length) return say(t("need_image"));
  if (!$("prompt").value.trim()) return say(t("need_prompt"));
  localStorage.setItem("qedit.key", $("key").value.trim());
  let task;
  try {
    task = await api("/v1/edits", { method: "POST", body: JSON.stringify(requestBody()) });
  } catch (e) {
    return say(e.message);
  }
  state.running = task.id;
  $("submit").disabled = true;
  $("progress").hidden = false;
  $("bar").value = 0;
  $("step").textContent = t("queued");
  refreshHistory();
  try {
    task = await follow(task.id);
  } catch (e) {
    task = await api(`/v1/edits/${task.id}`);
  }
  $("submit").disabled = false;
  $("progress").hidden = true;
  state.running = null;
  if (task.status === "completed") showResult(task);
  else if (task.status === "cancelled") say(t("cancelled"));
  else say(t("failed", { reason: task.error?.message || task.status }));
  refreshHistory();
}

async function follow(id) {
  // EventSource cannot send the key: read the event stream through fetch
  const r = await fetch(`/v1/edits/${id}/events`, { headers: headers(false) });
  if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  const started = performance.now();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (!data) continue;
      const payload = JSON.parse(data);
      if (event !== "step") last = payload;  // step events carry {step, total}; the others the task
      const { step, total } = event === "step" ? payload : payload.progress || {};
      if (total) {
        $("bar").value = step / total;
        const eta = step ? Math.round(((performance.now() - started) / step) * (total - step) / 1000) : null;
        $("step").textContent = t("step", { step, total }) + (eta !== null ? ` · ${t("eta", { s: eta })}` : "");
      }
      if (["completed", "failed", "cancelled"].includes(event)) return last;
    }
  }
  return last && ["completed", "failed", "cancelled"].includes(last.status) ? last : api(`/v1/edits/${id}`);
}

async function cancel() {
  if (!state.running) return;
  try { await api(`/v1/edits/${state.running}`, { method: "DELETE" }); } catch (e) { say(e.message); }
}

function showResult(task, fromChain = false) {
  const out = task.outputs[0];
  state.last = task;
  state.lastSeed = out?.seed ?? null;
  $("result").hidden = false;
  const before = state.images[state.images.length - 1];
  $("before").src = before?.preview || before?.url || out.url;
  $("after").src = out.url;
  $("download").href = out.url;
  $("download").setAttribute("download", `${task.id}.${out.format}`);
  const shown = { id: task.id, ...task.params, seed: out.seed };  // the seed used, to re-run it exactly
  $("params").textContent = JSON.stringify(shown, null, 2);
  if (!fromChain) state.chain.push(task);
  renderChain();
  fitSlider();
}

function renderChain() {
  const list = $("chain-steps");
  list.replaceChildren();
  state.chain.forEach((task) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${t("reopen")}: ${task.params.prompt?.slice(0, 40) ?? task.id} (${t("seed_used", { seed: task.outputs[0]?.seed })})`;
    button.onclick = () => showResult(task, true);
    li.append(button);
    list.append(li);
  });
}

function fitSlider() {
  const width = $("before").clientWidth;
  $("after").style.width = `${width}px`;
  $("after-wrap").style.width = `${$("slider").value}%`;
}

function chainFromResult() {
  const task = state.last;
  if (!task) return;
  const out = task.outputs[0];
  state.images = [{ name: `task://${task.id}/0`, source: `task://${task.id}/0`, preview: out.url, width: out.width, height: out.height }];
  renderThumbs();
  $("prompt").value = "";
  $("prompt").focus();
}

function pythonSnippet() {
  const task = state.last;
  if (!task) return "";
  const body = { ...task.params, images: task.inputs.map((i) => i.source), seed: task.outputs[0]?.seed };
  return [
    "import os, httpx",
    `r = httpx.post("${location.origin}/v1/edits", headers={"Authorization": f"Bearer {os.environ['QEDIT_KEY']}"},`,
    `               json=${JSON.stringify(body)})`,
    "print(r.json())",
  ].join("\n");
}

function curlSnippet() {
  const task = state.last;
  if (!task) return "";
  const body = { ...task.params, images: task.inputs.map((i) => i.source), seed: task.outputs[0]?.seed };
  return `curl -X POST ${location.origin}/v1/edits -H "Authorization: Bearer $QEDIT_KEY" -H "Content-Type: application/json" -d '${JSON.stringify(body)}'`;
}

// -- history -------------------------------------------------------------------------------------

async function refreshHistory() {
  if (!state.config || (state.config.auth && !$("key").value.trim())) return;
  let page;
  try { page = await api("/v1/edits?limit=20"); } catch (e) { return; }
  const running = page.data.filter((x) => ["created", "processing"].includes(x.status)).length;
  const completed = page.data.filter((x) => x.status === "completed").length;
  $("counters").textContent = page.data.length ? t("counters", { running, completed }) : t("no_history");
  const list = $("history-list");
  list.replaceChildren();
  for (const task of page.data) {
    const li = document.createElement("li");
    li.dataset.status = task.status;
    if (task.outputs[0]) {
      const img = document.createElement("img");
      img.src = task.outputs[0].url;
      img.alt = task.params.prompt || "";
      li.append(img);
    }
    const text = document.createElement("div");
    text.textContent = `${task.params.prompt || ""} — ${task.status}`;
    if (task.status === "failed") {
      text.className = "status-failed";
      text.textContent += `: ${task.error?.message || ""}`;
    }
    li.append(text);
    if (task.status === "completed") {
      const open = document.createElement("button");
      open.type = "button";
      open.textContent = t("reopen");
      open.onclick = () => showResult(task, true);
      li.append(open);
    }
    list.append(li);
  }
}

// -- wiring --------------------------------------------------------------------------------------

async function main() {
  state.config = await (await fetch("/v1/playground/config")).json();
  $("model").textContent = state.config.model;
  $("key").value = localStorage.getItem("qedit.key") || "";
  $("key-row").hidden = !state.config.auth;
  $("steps").placeholder = String(state.config.default_steps);
  $("cfg").placeholder = String(state.config.default_cfg);
  $("fast-row").hidden = !state.config.fast;
  const lang = localStorage.getItem("qedit.lang") || ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en");
  applyLanguage(lang);
  $("lang").onchange = (e) => applyLanguage(e.target.value);
  $("key").onchange = () => { localStorage.setItem("qedit.key", $("key").value.trim()); refreshHistory(); };
  const drop = $("drop");
  drop.onclick = (e) => { if (e.target !== $("files")) $("files").click(); };
  drop.onkeydown = (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("files").click(); } };
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); addFiles([...e.dataTransfer.files]); };
  $("files").onchange = (e) => { addFiles([...e.target.files]); e.target.value = ""; };
  document.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files || [])];
    if (files.length) addFiles(files);
  });
  $("submit").onclick = submit;
  $("cancel").onclick = cancel;
  $("reuse-seed").onclick = () => { if (state.lastSeed !== null) $("seed").value = state.lastSeed; };
  $("chain").onclick = chainFromResult;
  $("copy").onclick = async () => {
    const text = curlSnippet();
    $("params").textContent = text;
    try { await navigator.clipboard.writeText(text); say(t("copied")); } catch { /* no clipboard permission: shown instead */ }
  };
  $("copy-python").onclick = async () => {
    const text = pythonSnippet();
    $("params").textContent = text;
    try { await navigator.clipboard.writeText(text); say(t("copied")); } catch { /* shown instead */ }
  };
  $("compare").onclick = (e) => { if (e.target.tagName === "IMG") { $("compare").classList.toggle("zoom"); fitSlider(); } };
  $("slider").oninput = fitSlider;
  $("before").onload = fitSlider;
  window.addEventListener("resize", fitSlider);
  bindMask();
  document.body.dataset.ready = "true";  // every control is wired (tests wait for this)
}

main();
