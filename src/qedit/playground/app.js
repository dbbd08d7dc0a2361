// The Playground: a client of qedit's public API (/v1/edits), nothing more.
// Inputs are checked here against the limits the server publishes (/v1/playground/config) so a
// person learns what is wrong before anything is sent; the server checks everything again.

const STRINGS = {
  en: {
    title: "qedit Playground", api_docs: "API docs", language: "Language", new_edit: "New edit",
    api_key: "API key", drop: "Drop 1-{n} images here, paste, or choose files",
    mask: "Mask (paint where it may change)", brush: "Brush", eraser: "Eraser", brush_tool: "Paint",
    rect: "Rectangle", box: "Region box", copy_python: "Copy as Python", undo: "Undo", clear: "Clear",
    instruction: "Instruction", options: "Options", negative: "Negative prompt", steps: "Steps",
    cfg: "Guidance (CFG)", seed: "Seed", reuse_seed: "Reuse last seed", size: "Size", format: "Format",
    count: "Images", fast: "Fast (Lightning)", off: "off", edit: "Edit", cancel: "Cancel", result: "Result",
    download: "Download", edit_result: "Edit this result", copy_curl: "Copy as curl", chain_steps: "Steps of this chain",
    history: "History", limits: "{formats}; {min}-{max} px a side; up to {mb} MB each; at most {n}",
    counters: "{running} running · {completed} completed", no_history: "No edits yet",
    bad_format: "{name}: not a supported image ({formats})", too_big: "{name}: {mb} MB, at most {max} MB allowed",
    bad_side: "{name}: {w}x{h} px, each side must be {min}-{max} px", too_many: "at most {images}",
    need_image: "add an image first", need_prompt: "write an instruction first", need_key: "enter your API key",
    step: "step {step}/{total}", eta: "about {s} s left", queued: "queued", copied: "copied",
    failed: "failed: {reason}", cancelled: "cancelled", reopen: "Reopen", seed_used: "seed {seed}",
    skip: "Skip to the editor", choose: "Choose files", box_colour: "Box colour", mask_tools: "mask and region tools", images: "images",
    canvas: "mask and region boxes on the edited image", regions: "boxes and mask rectangles",
    canvas_help: "On the image: Enter adds a box (or, with Rectangle, a mask rectangle), arrow keys move it, Shift+arrows resize it, Page Up/Down choose another, Delete removes it.",
    add_box: "Add region box", add_rect: "Add mask rectangle", box_n: "Box {n} ({colour})", rect_n: "Mask rectangle {n}",
    erase_n: "Eraser rectangle {n}", region_at: "{name}: x {x}, y {y}, {w} × {h} px", removed: "{name} removed",
    no_region: "nothing selected: press Enter to add one", remove_named: "Remove {name}", remove_image: "remove {name}",
    seed_help: "-1: a random seed", fast_help: "Fast runs 4 or 8 steps without guidance; steps and guidance are then set by it.",
    loras: "LoRAs", add_lora: "Add LoRA", lora_n: "LoRA {n}: name or URL", scale: "scale", lora_scale_n: "scale of LoRA {n}",
    lora_help: "LoRAs this server allows: {sources}. Up to 3, scale -4 to 4.", progress: "progress", compare: "Before / after",
    after_pct: "{v}% after", parameters: "parameters", started: "started", done: "done",
    reopen_named: "Reopen: {name}", counters_failed: "{failed} failed",
    snippet_note: "Save the inputs beside the command under these names (download them here):",
    snippet_missing: "Save the inputs you used beside the command under these names (this page no longer has them):",
    model: "Model", drop_one: "Drop an image here, paste, or choose a file", default_model: "default",
    workers_one: "1 worker", workers_n: "{n} workers", no_worker_wait: "no worker: waits", no_worker_refuse: "no worker: refused",
    model_busy: "{workers}: {busy} busy, {idle} idle{loading}; up to {images} an edit", loading_n: ", {n} loading",
    model_wait: "No worker serves {model} now: an edit waits in the queue until one starts. Up to {images} an edit.",
    model_refuse: "No worker serves {model} now: the server refuses edits for it until one starts. Up to {images} an edit.",
    models_need_key: "Enter your API key to see the other models and their workers.",
    too_many_for: "{model} takes at most {images}: remove {extra}", image_one: "1 image", image_n: "{n} images",
  },
  zh: {
    title: "qedit 在线试用", api_docs: "API 文档", language: "语言", new_edit: "新建编辑",
    api_key: "API 密钥", drop: "拖入 1-{n} 张图片，粘贴，或选择文件",
    mask: "蒙版（涂抹允许修改的区域）", brush: "画笔", eraser: "橡皮擦", brush_tool: "涂抹",
    rect: "矩形", box: "区域框", copy_python: "复制为 Python", undo: "撤销", clear: "清除",
    instruction: "编辑指令", options: "选项", negative: "反向提示词", steps: "步数",
    cfg: "引导强度 (CFG)", seed: "随机种子", reuse_seed: "沿用上次种子", size: "尺寸", format: "格式",
    count: "图片数量", fast: "快速 (Lightning)", off: "关闭", edit: "编辑", cancel: "取消", result: "结果",
    download: "下载", edit_result: "继续编辑此结果", copy_curl: "复制为 curl", chain_steps: "此编辑链的步骤",
    history: "历史记录", limits: "{formats}；每边 {min}-{max} 像素；每张不超过 {mb} MB；最多 {n} 张",
    counters: "{running} 个进行中 · {completed} 个已完成", no_history: "还没有编辑记录",
    bad_format: "{name}：不支持的图片格式（{formats}）", too_big: "{name}：{mb} MB，最大 {max} MB",
    bad_side: "{name}：{w}x{h} 像素，每边必须在 {min}-{max} 像素之间", too_many: "最多 {images}",
    need_image: "请先添加图片", need_prompt: "请先填写编辑指令", need_key: "请输入 API 密钥",
    step: "第 {step}/{total} 步", eta: "约剩 {s} 秒", queued: "排队中", copied: "已复制",
    failed: "失败：{reason}", cancelled: "已取消", reopen: "重新打开", seed_used: "种子 {seed}",
    skip: "跳到编辑区", choose: "选择文件", box_colour: "框的颜色", mask_tools: "蒙版与区域工具", images: "图片",
    canvas: "被编辑图片上的蒙版与区域框", regions: "区域框与蒙版矩形",
    canvas_help: "在图片上：Enter 添加一个框（选中“矩形”时添加蒙版矩形），方向键移动，Shift+方向键调整大小，Page Up/Down 切换，Delete 删除。",
    add_box: "添加区域框", add_rect: "添加蒙版矩形", box_n: "框 {n}（{colour}）", rect_n: "蒙版矩形 {n}",
    erase_n: "擦除矩形 {n}", region_at: "{name}：x {x}，y {y}，{w} × {h} 像素", removed: "已删除{name}",
    no_region: "未选中任何区域：按 Enter 添加", remove_named: "删除{name}", remove_image: "移除 {name}",
    seed_help: "-1：随机种子", fast_help: "快速模式运行 4 或 8 步且不使用引导；步数与引导强度由它决定。",
    loras: "LoRA", add_lora: "添加 LoRA", lora_n: "LoRA {n}：名称或 URL", scale: "权重", lora_scale_n: "LoRA {n} 的权重",
    lora_help: "本服务器允许的 LoRA：{sources}。最多 3 个，权重 -4 到 4。", progress: "进度", compare: "编辑前 / 编辑后",
    after_pct: "{v}% 编辑后", parameters: "参数", started: "已开始", done: "已完成",
    reopen_named: "重新打开：{name}", counters_failed: "{failed} 个失败",
    snippet_note: "请把输入图片以这些文件名保存在命令旁边（可在此下载）：",
    snippet_missing: "请把当时使用的输入图片以这些文件名保存在命令旁边（本页面已没有这些图片）：",
    model: "模型", drop_one: "拖入 1 张图片，粘贴，或选择文件", default_model: "默认",
    workers_one: "1 个工作进程", workers_n: "{n} 个工作进程", no_worker_wait: "无工作进程：排队等待", no_worker_refuse: "无工作进程：将被拒绝",
    model_busy: "{workers}：{busy} 个忙碌，{idle} 个空闲{loading}；每次编辑最多 {images}", loading_n: "，{n} 个加载中",
    model_wait: "目前没有工作进程运行 {model}：编辑会排队等待，直到有工作进程启动。每次编辑最多 {images}。",
    model_refuse: "目前没有工作进程运行 {model}：在有工作进程启动之前，服务器会拒绝它的编辑。每次编辑最多 {images}。",
    models_need_key: "输入 API 密钥后可查看其他模型及其工作进程。",
    too_many_for: "{model} 最多接受 {images}：请移除 {extra} 张", image_one: "1 张图片", image_n: "{n} 张图片",
  },
};
const EXTENSIONS = ["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff"];
const $ = (id) => document.getElementById(id);
const state = {
  config: null, lang: "en", images: [], last: null, lastSeed: null, chain: [], running: null, strokes: [],
  selected: null,  // index in strokes of the box/rectangle the keyboard moves
  sent: new Map(),  // task id -> what this page sent (inputs, mask, body): the snippets repeat it
  models: [],  // GET /v1/models: what a request may name, with live worker counts (empty until read with the key)
};

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
  for (const el of document.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  renderModels();
  showLimits();
  renderThumbs(false);
  renderRegions();
  renderLoras();
  refreshHistory();
}

function megabytes(bytes) {
  const mb = bytes / 1048576;
  return mb < 10 ? mb.toFixed(1) : String(Math.round(mb));
}

function say(text) { $("message").textContent = text || ""; }

function announce(text) { $("announce").textContent = text; }  // a polite live region, for screen readers

function fail(text, control) {
  // the message is an alert (read out at once); focus goes where the person can fix it
  say(text);
  (control || $("message")).focus();
}

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
  const n = maxImages();
  $("limits").textContent = t("limits", {
    formats: c.formats, min: c.min_side, max: c.max_side, mb: megabytes(c.max_input_bytes), n,
  });
  $("drop-text").textContent = n > 1 ? t("drop", { n }) : t("drop_one");
  $("files").multiple = n > 1;
}

// -- the model: GET /v1/models lists what a request may name and who serves it -------------------

function images(n) { return n === 1 ? t("image_one") : t("image_n", { n }); }

function chosenModel() {
  return state.models.find((m) => m.id === $("model-pick").value) || null;
}

function maxImages() {
  // the chosen model's limit; before the list is read, the default model's (from the config)
  return chosenModel()?.max_images ?? state.config.max_images;
}

function workerText(m) {
  if (m.workers) return m.workers === 1 ? t("workers_one") : t("workers_n", { n: m.workers });
  return t(state.config.no_worker === "refuse" ? "no_worker_refuse" : "no_worker_wait");
}

function renderModels() {
  if (!state.config) return;
  const select = $("model-pick");
  const label = (m) => `${m.id}${m.default ? ` (${t("default_model")})` : ""} — ${workerText(m)}`;
  const ids = [...select.options].map((o) => o.value);
  if (state.models.length && ids.join("\n") === state.models.map((m) => m.id).join("\n")) {
    // the same models: new counts in place, so a person choosing with the keyboard keeps their place
    state.models.forEach((m, i) => { select.options[i].textContent = label(m); });
    return modelChosen(false);
  }
  const want = localStorage.getItem("qedit.model") || select.value;  // the person's last choice, kept across reloads
  select.replaceChildren();
  if (!state.models.length) {  // not read (yet): the server's default is the one choice
    select.append(new Option(state.config.model, state.config.model));
  }
  for (const m of state.models) select.append(new Option(label(m), m.id));
  const fallback = state.models.find((m) => m.default)?.id ?? select.options[0]?.value;
  select.value = state.models.some((m) => m.id === want) ? want : fallback;
  modelChosen(false);
}

function modelChosen(remember = true) {
  const m = chosenModel();
  const id = $("model-pick").value;
  if (remember) localStorage.setItem("qedit.model", id);
  $("model").textContent = id;
  const n = maxImages();
  let status = t("models_need_key");
  if (m && m.workers) {
    status = t("model_busy", { workers: workerText(m), busy: m.busy, idle: m.idle, loading: m.loading ? t("loading_n", { n: m.loading }) : "", images: images(n) });
  } else if (m) {
    status = t(state.config.no_worker === "refuse" ? "model_refuse" : "model_wait", { model: m.id, images: images(n) });
  }
  $("model-status").textContent = status;
  showLimits();
  if (remember && state.images.length > n) say(tooMany());
}

function tooMany() {
  const n = maxImages();
  return t("too_many_for", { model: $("model-pick").value, images: images(n), extra: state.images.length - n });
}

async function loadModels() {
  // with the key the page keeps; without one (or refused) the picker keeps the server's default
  if (!state.config || (state.config.auth && !$("key").value.trim())) return;
  let list;
  try { list = await api("/v1/models"); } catch (e) { return; }
  state.models = list.data;
  renderModels();
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
    if (state.images.length >= maxImages()) return say(t("too_many", { images: images(maxImages()) }));
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

function renderThumbs(reset = true) {
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
    remove.setAttribute("aria-label", t("remove_image", { name: image.name }));
    remove.onclick = () => { state.images.splice(i, 1); renderThumbs(); $("drop").focus(); };
    li.append(img, remove);
    list.append(li);
  });
  if (reset) setupMask();
}

// -- mask painting: white where the edit may change ----------------------------------------------

function setupMask() {
  const last = state.images[state.images.length - 1];
  $("mask-tools").hidden = $("canvas-wrap").hidden = $("regions-block").hidden = !last;
  state.strokes = [];
  state.selected = null;
  renderRegions();
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
  const chosen = state.strokes[state.selected];
  if (chosen && document.activeElement === canvas) {  // the one the keyboard moves: a dashed frame
    const r = extent(chosen);
    ctx.setLineDash([8, 6]);
    ctx.lineWidth = Math.max(2, canvas.width / 250);
    ctx.strokeStyle = "#000";
    ctx.strokeRect(r.x - 4, r.y - 4, r.w + 8, r.h + 8);
    ctx.setLineDash([]);
  }
}

// -- boxes and rectangles from the keyboard (and as numbers) --------------------------------------

const isRegion = (s) => s.box || s.rect;

function extent(s) {
  // x, y, w, h in image pixels of a box or a rectangle stroke (whichever corner it was drawn from)
  const [x0, y0, x1, y1] = s.box ? [s.x0, s.y0, s.x1, s.y1] : s.rect;
  return { x: Math.round(Math.min(x0, x1)), y: Math.round(Math.min(y0, y1)), w: Math.round(Math.abs(x1 - x0)), h: Math.round(Math.abs(y1 - y0)) };
}

function place(s, { x, y, w, h }) {
  // clamp inside the image: a box the server would refuse cannot be made here
  const W = $("mask-canvas").width, H = $("mask-canvas").height;
  w = Math.max(2, Math.min(W, Math.round(w)));
  h = Math.max(2, Math.min(H, Math.round(h)));
  x = Math.max(0, Math.min(W - w, Math.round(x)));
  y = Math.max(0, Math.min(H - h, Math.round(y)));
  if (s.box) Object.assign(s, { x0: x, y0: y, x1: x + w, y1: y + h });
  else s.rect = [x, y, x + w, y + h];
}

function regionName(s) {
  const n = state.strokes.filter(isRegion).indexOf(s) + 1;
  if (s.box) return t("box_n", { n, colour: s.colour });
  return t(s.erase ? "erase_n" : "rect_n", { n });
}

function describe(s) { return t("region_at", { name: regionName(s), ...extent(s) }); }

function addRegion(kind) {
  const canvas = $("mask-canvas");
  const W = canvas.width, H = canvas.height;
  const s = kind === "box"
    ? { box: true, colour: $("box-colour").value }
    : { rect: [0, 0, 0, 0], erase: $("eraser").getAttribute("aria-pressed") === "true" };
  const shift = (state.strokes.filter(isRegion).length % 5) * 0.05;  // the next one beside the last, not on it
  place(s, { x: W * (0.375 + shift), y: H * (0.375 + shift), w: W / 4, h: H / 4 });  // a quarter of each side
  state.strokes.push(s);
  state.selected = state.strokes.length - 1;
  renderRegions();
  redrawMask();
  announce(describe(s));
  return s;
}

function renderRegions() {
  const list = $("regions");
  list.replaceChildren();
  state.strokes.forEach((s, index) => {
    if (!isRegion(s)) return;
    const li = document.createElement("li");
    li.dataset.index = String(index);
    li.classList.toggle("selected", index === state.selected);
    const name = regionName(s);
    const title = document.createElement("span");
    if (s.box) {
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = s.colour;
      title.append(swatch, " ");
    }
    title.append(name);
    li.append(title);
    const r = extent(s);
    for (const k of ["x", "y", "w", "h"]) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "number";
      input.min = "0";
      input.step = "1";
      input.value = String(r[k]);
      input.dataset.k = k;
      input.setAttribute("aria-label", `${k} · ${name}`);
      input.onchange = () => {
        const now = extent(s);
        now[k] = Number(input.value || 0);
        place(s, now);
        state.selected = index;
        syncRegions();
        redrawMask();
        announce(describe(s));
      };
      label.append(k, input);
      li.append(label);
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.setAttribute("aria-label", t("remove_named", { name }));
    remove.onclick = () => { removeRegion(index); $("mask-canvas").focus(); };
    li.append(remove);
    list.append(li);
  });
}

function syncRegions() {
  // the number fields follow the keyboard and the pointer without being rebuilt (focus stays put)
  for (const li of $("regions").children) {
    const index = Number(li.dataset.index);
    li.classList.toggle("selected", index === state.selected);
    const r = extent(state.strokes[index]);
    for (const input of li.querySelectorAll("input")) {
      if (document.activeElement !== input) input.value = String(r[input.dataset.k]);
    }
  }
}

function removeRegion(index) {
  const s = state.strokes[index];
  if (!s) return;
  const name = regionName(s);
  state.strokes.splice(index, 1);
  const left = state.strokes.map((a, i) => (isRegion(a) ? i : -1)).filter((i) => i >= 0);
  state.selected = left.length ? left[left.length - 1] : null;
  renderRegions();
  redrawMask();
  announce(t("removed", { name }));
}

function regionKeys(e) {
  const canvas = $("mask-canvas");
  const indices = state.strokes.map((a, i) => (isRegion(a) ? i : -1)).filter((i) => i >= 0);
  const chosen = state.strokes[state.selected];
  const step = e.altKey ? 1 : Math.max(1, Math.round(Math.min(canvas.width, canvas.height) / 50));
  const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  if (e.key === "Enter") {
    addRegion(tool() === "box" ? "box" : "rect");
  } else if (e.key in arrows) {
    if (!chosen) { announce(t("no_region")); e.preventDefault(); return; }
    const [dx, dy] = arrows[e.key];
    const r = extent(chosen);
    if (e.shiftKey) place(chosen, { ...r, w: r.w + dx * step, h: r.h + dy * step });
    else place(chosen, { ...r, x: r.x + dx * step, y: r.y + dy * step });
    syncRegions();
    redrawMask();
    announce(describe(chosen));
  } else if (e.key === "PageDown" || e.key === "PageUp") {
    if (!indices.length) { announce(t("no_region")); e.preventDefault(); return; }
    const at = indices.indexOf(state.selected);
    const next = e.key === "PageDown" ? (at + 1) % indices.length : (at - 1 + indices.length) % indices.length;
    state.selected = indices[next];
    syncRegions();
    redrawMask();
    announce(describe(state.strokes[state.selected]));
  } else if (e.key === "Delete" || e.key === "Backspace") {
    if (!chosen) { announce(t("no_region")); e.preventDefault(); return; }
    removeRegion(state.selected);
  } else {
    return;
  }
  e.preventDefault();
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
    else if (current && isRegion(current)) state.selected = state.strokes.length - 1;
    delete current?.start;
    current = null;
    renderRegions();
    redrawMask();
  });
  canvas.addEventListener("keydown", regionKeys);
  canvas.addEventListener("focus", () => {
    const chosen = state.strokes[state.selected];
    redrawMask();
    announce(chosen ? describe(chosen) : t("no_region"));
  });
  canvas.addEventListener("blur", redrawMask);
  $("add-box").onclick = () => { addRegion("box"); $("mask-canvas").focus(); };
  $("add-rect").onclick = () => { addRegion("rect"); $("mask-canvas").focus(); };
  for (const button of document.querySelectorAll("#mask-tools [data-tool]")) {
    button.onclick = () => {
      for (const other of document.querySelectorAll("#mask-tools [data-tool]")) other.setAttribute("aria-pressed", String(other === button));
    };
  }
  $("eraser").onclick = () => {
    const on = $("eraser").getAttribute("aria-pressed") !== "true";
    $("eraser").setAttribute("aria-pressed", String(on));
  };
  $("undo").onclick = () => {
    state.strokes.pop();
    if (state.selected !== null && state.selected >= state.strokes.length) state.selected = null;
    renderRegions();
    redrawMask();
  };
  $("clear").onclick = () => { state.strokes = []; state.selected = null; renderRegions(); redrawMask(); };
}

// -- submit, progress, result --------------------------------------------------------------------

// -- LoRAs: typed in (the server lists none; it names what it allows, and refuses the rest) -------

const MAX_LORAS = 3;
state.loras = [];  // [{path, scale}] as the rows show them

function renderLoras() {
  const list = $("loras");
  if (!list) return;
  list.replaceChildren();
  state.loras.forEach((lora, i) => {
    const li = document.createElement("li");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.setAttribute("aria-label", t("remove_named", { name: lora.path || `LoRA ${i + 1}` }));
    const pathLabel = document.createElement("label");
    const path = document.createElement("input");
    path.type = "text";
    path.className = "lora-path";
    path.value = lora.path;
    path.placeholder = "style.safetensors";
    path.setAttribute("aria-label", t("lora_n", { n: i + 1 }));
    path.oninput = () => {
      lora.path = path.value;
      remove.setAttribute("aria-label", t("remove_named", { name: lora.path || `LoRA ${i + 1}` }));
    };
    pathLabel.append(path);
    const scaleLabel = document.createElement("label");
    const scale = document.createElement("input");
    scale.type = "number";
    scale.className = "lora-scale";
    Object.assign(scale, { min: "-4", max: "4", step: "0.05", value: String(lora.scale) });
    scale.setAttribute("aria-label", t("lora_scale_n", { n: i + 1 }));
    scale.oninput = () => { lora.scale = scale.value === "" ? 1 : Number(scale.value); };
    scaleLabel.append(t("scale"), " ", scale);
    remove.onclick = () => { state.loras.splice(i, 1); renderLoras(); $("add-lora").focus(); };
    li.append(pathLabel, scaleLabel, remove);
    list.append(li);
  });
  $("add-lora").disabled = state.loras.length >= MAX_LORAS;
  if (state.config) $("lora-help").textContent = t("lora_help", { sources: state.config.loras });
}

function addLora() {
  if (state.loras.length >= MAX_LORAS) return;
  state.loras.push({ path: "", scale: 1 });
  renderLoras();
  $("loras").lastElementChild.querySelector("input").focus();
}

function fastChanged() {
  // fast sets its own steps and runs without CFG: the server refuses both with it, so they are off
  const fast = Boolean($("fast").value);
  for (const id of ["steps", "cfg"]) {
    $(id).disabled = fast;
    if (fast) $(id).value = "";
  }
  $("steps").placeholder = fast ? $("fast").value : String(state.config.default_steps);
  $("cfg").placeholder = fast ? "1" : String(state.config.default_cfg);
}

function requestBody() {
  const body = { prompt: $("prompt").value, images: state.images.map((i) => i.source || i.url) };
  if ($("model-pick").value) body.model = $("model-pick").value;
  const negative = $("negative").value;
  if (negative) body.negative_prompt = negative;
  if ($("steps").value && !$("steps").disabled) body.num_inference_steps = Number($("steps").value);
  if ($("cfg").value && !$("cfg").disabled) body.true_cfg_scale = Number($("cfg").value);
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
  const loras = state.loras.filter((l) => l.path.trim()).map((l) => ({ path: l.path.trim(), scale: l.scale }));
  if (loras.length) body.loras = loras;
  return body;
}

async function submit() {
  say("");
  if (state.config.auth && !$("key").value.trim()) return fail(t("need_key"), $("key"));
  if (!state.images.length) return fail(t("need_image"), $("drop"));
  if (!$("prompt").value.trim()) return fail(t("need_prompt"), $("prompt"));
  if (state.images.length > maxImages()) return fail(tooMany(), $("drop"));
  localStorage.setItem("qedit.key", $("key").value.trim());
  const body = requestBody();
  let task;
  try {
    task = await api("/v1/edits", { method: "POST", body: JSON.stringify(body) });
  } catch (e) {
    loadModels();  // a 503 no_worker: the counts the picker shows may be stale
    return fail(e.message);  // the server's refusal, as it says it (a LoRA it does not allow, no worker, ...)
  }
  state.sent.set(task.id, { body, images: state.images.map((i) => ({ ...i })) });
  state.running = task.id;
  $("submit").disabled = true;
  $("progress").hidden = false;
  $("bar").value = 0;
  $("step").textContent = t("queued");
  announce(t("queued"));
  $("cancel").focus();  // the one thing to do while it runs
  refreshHistory();
  try {
    task = await follow(task.id);
  } catch (e) {
    task = await api(`/v1/edits/${task.id}`);
  }
  $("submit").disabled = false;
  $("progress").hidden = true;
  state.running = null;
  if (task.status === "completed") {
    showResult(task);
    announce(t("done"));
    $("result-title").focus();
  } else if (task.status === "cancelled") {
    fail(t("cancelled"));
  } else {
    fail(t("failed", { reason: task.error?.message || task.status }));
  }
  refreshHistory();
  loadModels();
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
      if (event === "started") announce(t("started"));
      if (total && step && Math.floor((4 * step) / total) > Math.floor((4 * (step - 1)) / total)) {
        announce(t("step", { step, total }));  // each quarter, not each step: a screen reader keeps up
      }
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
  const sent = state.sent.get(task.id)?.body;
  const shown = { id: task.id, model: task.model, ...task.params, seed: out.seed };  // the seed used, to re-run it exactly
  if (sent) shown.output_format = sent.output_format;
  $("params").textContent = JSON.stringify(shown, null, 2);
  $("snippet-inputs").hidden = true;
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
    button.onclick = () => { showResult(task, true); $("result-title").focus(); };
    li.append(button);
    list.append(li);
  });
}

function fitSlider() {
  const width = $("before").clientWidth;
  const v = $("slider").value;
  $("after").style.width = `${width}px`;
  $("after-wrap").style.width = `${v}%`;
  $("slider").setAttribute("aria-valuetext", t("after_pct", { v }));
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

// -- the request as a command: curl and Python --------------------------------------------------
// Uploaded images travel as files (multipart /v1/edits/upload, where the server reads them as it
// reads any upload); task:// and nothing else stays JSON. The page offers the files under the
// names the command uses.

const MIME_EXT = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/bmp": "bmp", "image/tiff": "tiff" };

function snippetPlan() {
  const task = state.last;
  const sent = state.sent.get(task.id);
  const seed = task.outputs[0]?.seed;
  let params, inputs, mask = null;
  if (sent) {
    const { images: _images, mask: sentMask, ...rest } = sent.body;
    params = rest;
    mask = sentMask || null;
    inputs = sent.images.map((i) => (i.source ? { source: i.source, href: i.preview, ext: "png" } : { href: i.url, ext: MIME_EXT[/^data:([^;,]+)/.exec(i.url)?.[1]] || "png" }));
  } else {  // reopened from the history: the parameters are the server's, the files are no longer here
    params = { model: task.model, ...task.params };
    inputs = task.inputs.map((i) => (i.source.startsWith("task://") ? { source: i.source } : { ext: "png" }));
  }
  params.seed = seed;  // the seed used, so the command makes the same image
  const multipart = Boolean(mask) || inputs.some((i) => !i.source);
  const files = multipart ? inputs.map((i, n) => ({ ...i, name: `input-${n + 1}.${i.ext || "png"}` })) : [];
  if (multipart && mask) files.push({ name: "mask.png", href: mask, field: "mask" });
  return { params, inputs, files, multipart };
}

const shellQuote = (text) => `'${text.replace(/'/g, "'\\''")}'`;

function curlSnippet() {
  if (!state.last) return "";
  const { params, inputs, files, multipart } = snippetPlan();
  const auth = '-H "Authorization: Bearer $QEDIT_KEY"';
  if (!multipart) {
    const body = JSON.stringify({ ...params, images: inputs.map((i) => i.source) });
    return `curl -X POST ${location.origin}/v1/edits ${auth} -H "Content-Type: application/json" --data-raw ${shellQuote(body)}`;
  }
  const parts = files.map((f) => `  -F ${f.field || "image"}=@${f.name}`);
  return [`curl -X POST ${location.origin}/v1/edits/upload ${auth}`, ...parts, `  --form-string ${shellQuote(`params=${JSON.stringify(params)}`)}`].join(" \\\n");
}

function pythonSnippet() {
  if (!state.last) return "";
  const { params, inputs, files, multipart } = snippetPlan();
  const head = ["import json, os", "", "import httpx", "", `params = json.loads(${JSON.stringify(JSON.stringify(params))})`];
  const auth = `headers={"Authorization": f"Bearer {os.environ['QEDIT_KEY']}"}`;
  if (!multipart) {
    return [...head, `params["images"] = ${JSON.stringify(inputs.map((i) => i.source))}`,
      `r = httpx.post("${location.origin}/v1/edits", ${auth}, json=params, timeout=60)`, "print(r.json())"].join("\n");
  }
  const opened = files.map((f) => `("${f.field || "image"}", open("${f.name}", "rb"))`).join(", ");
  return [...head, `files = [${opened}]`,
    `r = httpx.post("${location.origin}/v1/edits/upload", ${auth}, files=files, data={"params": json.dumps(params)}, timeout=60)`,
    "print(r.json())"].join("\n");
}

function showSnippet(text) {
  $("params").textContent = text;
  const { files } = snippetPlan();
  $("snippet-inputs").hidden = !files.length;
  $("snippet-note").textContent = t(files.every((f) => f.href) ? "snippet_note" : "snippet_missing");
  const list = $("input-links");
  list.replaceChildren();
  for (const f of files) {
    const li = document.createElement("li");
    if (f.href) {
      const a = document.createElement("a");
      a.href = f.href;
      a.download = f.name;
      a.textContent = f.name;
      li.append(a);
    } else {
      li.textContent = f.name;
    }
    list.append(li);
  }
}

// -- history -------------------------------------------------------------------------------------

async function refreshHistory() {
  if (!state.config || (state.config.auth && !$("key").value.trim())) return;
  let page;
  try { page = await api("/v1/edits?limit=20"); } catch (e) { return; }
  const c = page.counts;  // all of the key's edits, counted by the server (the list is the last 20)
  let counters = t("counters", { running: c.queued + c.running, completed: c.completed });
  if (c.failed) counters += ` · ${t("counters_failed", { failed: c.failed })}`;
  $("counters").textContent = page.data.length ? counters : t("no_history");
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
      open.setAttribute("aria-label", t("reopen_named", { name: (task.params.prompt || task.id).slice(0, 60) }));
      open.onclick = () => { showResult(task, true); $("result-title").focus(); };
      li.append(open);
    }
    list.append(li);
  }
}

// -- wiring --------------------------------------------------------------------------------------

async function main() {
  state.config = await (await fetch("/v1/playground/config")).json();
  $("model").textContent = state.config.model;
  $("model-pick").onchange = () => modelChosen();
  $("model-pick").onfocus = loadModels;  // fresh counts when a person is about to choose
  $("key").value = localStorage.getItem("qedit.key") || "";
  $("key-row").hidden = !state.config.auth;
  $("steps").placeholder = String(state.config.default_steps);
  $("cfg").placeholder = String(state.config.default_cfg);
  $("fast-row").hidden = $("fast-help").hidden = !state.config.fast;
  $("fast").onchange = fastChanged;
  $("add-lora").onclick = addLora;
  const lang = localStorage.getItem("qedit.lang") || ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en");
  applyLanguage(lang);
  $("lang").onchange = (e) => applyLanguage(e.target.value);
  $("key").onchange = () => { localStorage.setItem("qedit.key", $("key").value.trim()); refreshHistory(); loadModels(); };
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
  const copy = (make) => async () => {
    const text = make();
    showSnippet(text);
    try { await navigator.clipboard.writeText(text); announce(t("copied")); } catch { /* no clipboard permission: shown instead */ }
  };
  $("copy").onclick = copy(curlSnippet);
  $("copy-python").onclick = copy(pythonSnippet);
  $("compare").onclick = (e) => { if (e.target.tagName === "IMG") { $("compare").classList.toggle("zoom"); fitSlider(); } };
  $("slider").oninput = fitSlider;
  $("before").onload = fitSlider;
  window.addEventListener("resize", fitSlider);
  bindMask();
  await loadModels();
  setInterval(() => { if (!document.hidden) loadModels(); }, 10_000);  // worker counts stay live
  document.body.dataset.ready = "true";  // every control is wired (tests wait for this)
}

main();
