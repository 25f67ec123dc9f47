// medfusion image viewer: wheel zoom, drag pan, two horizontal calipers (cardiac, thoracic) in image pixels.
// The image layer is transformed by translate(tx, ty) scale(k); a screen point (sx, sy) in the viewport is
// at image pixel ((sx - tx) / k, (sy - ty) / k) (medfusion.review.viewer.geometry, same formulas).
export default function (component) {
  const { data, setStateValue, parentElement } = component;
  let root = parentElement.querySelector(".mfv-root");
  if (!root) {
    root = document.createElement("div");
    root.className = "mfv-root";
    root.innerHTML =
      '<div class="mfv-tools">' +
      '<button type="button" data-tool="pan" class="mfv-on">Pan</button>' +
      '<button type="button" data-tool="cardiac">Cardiac width</button>' +
      '<button type="button" data-tool="thoracic">Thoracic width</button>' +
      '<button type="button" data-action="fit">Fit</button>' +
      '<button type="button" data-action="one">1:1</button>' +
      '<span class="mfv-readout"></span></div>' +
      '<div class="mfv-viewport"><div class="mfv-layer"><img class="mfv-img" alt="study image" draggable="false">' +
      '<svg class="mfv-svg" xmlns="http://www.w3.org/2000/svg"></svg></div></div>';
    parentElement.appendChild(root);
    root.__mfv = { k: 1, tx: 0, ty: 0, key: null, tool: "pan", calipers: {}, drag: null };
    attach(root);
  }
  const s = root.__mfv;
  s.send = setStateValue;
  s.data = data;
  const viewport = root.querySelector(".mfv-viewport");
  viewport.style.height = (data.viewport_height || 560) + "px";
  const img = root.querySelector(".mfv-img");
  if (img.getAttribute("src") !== data.src) img.setAttribute("src", data.src);
  const layer = root.querySelector(".mfv-layer");
  layer.style.width = data.width + "px";
  layer.style.height = data.height + "px";
  const svg = root.querySelector(".mfv-svg");
  svg.setAttribute("viewBox", `0 0 ${data.width} ${data.height}`);
  svg.setAttribute("width", data.width);
  svg.setAttribute("height", data.height);
  const viewKey = `${data.key}|${data.width}x${data.height}`;
  if (s.key !== viewKey) {
    s.key = viewKey;
    s.calipers = {};
    requestAnimationFrame(() => fit(root));
  }
  // calipers the server knows for this image (after a reload); those drawn here since stay until the image changes
  const given = data.calipers || {};
  for (const name of ["cardiac", "thoracic"]) {
    if (given[name] && !(s.drag && s.drag.name === name)) s.calipers[name] = given[name];
  }
  draw(root);
}

function fit(root) {
  const s = root.__mfv;
  const vp = root.querySelector(".mfv-viewport");
  const w = vp.clientWidth || 600;
  const h = vp.clientHeight || 560;
  s.fitScale = Math.min(w / s.data.width, h / s.data.height);
  s.k = s.fitScale;
  s.tx = (w - s.data.width * s.k) / 2;
  s.ty = (h - s.data.height * s.k) / 2;
  draw(root);
}

function draw(root) {
  const s = root.__mfv;
  const layer = root.querySelector(".mfv-layer");
  layer.style.transform = `translate(${s.tx}px, ${s.ty}px) scale(${s.k})`;
  root.querySelector(".mfv-img").style.imageRendering = s.k >= 2 ? "pixelated" : "auto";
  root.dataset.view = JSON.stringify({ k: s.k, tx: s.tx, ty: s.ty, fit: s.fitScale || s.k });
  const svg = root.querySelector(".mfv-svg");
  const colours = { cardiac: "#ff4d4d", thoracic: "#33c3ff" };
  let parts = "";
  for (const [name, c] of Object.entries(s.calipers)) {
    const tick = 6 / s.k;
    parts +=
      // the layer's CSS scale also scales strokes: 2 screen pixels are 2 / k image pixels
      `<g class="mfv-caliper" data-name="${name}" stroke="${colours[name]}" stroke-width="${2 / s.k}">` +
      `<line x1="${c.x0}" y1="${c.y}" x2="${c.x1}" y2="${c.y}"/>` +
      `<line x1="${c.x0}" y1="${c.y - tick}" x2="${c.x0}" y2="${c.y + tick}"/>` +
      `<line x1="${c.x1}" y1="${c.y - tick}" x2="${c.x1}" y2="${c.y + tick}"/></g>`;
  }
  svg.innerHTML = parts;
  const fmt = (c) => (c ? Math.abs(c.x1 - c.x0).toFixed(1) + " px" : "–");
  const ratio =
    s.calipers.cardiac && s.calipers.thoracic && Math.abs(s.calipers.thoracic.x1 - s.calipers.thoracic.x0) > 0
      ? (Math.abs(s.calipers.cardiac.x1 - s.calipers.cardiac.x0) /
          Math.abs(s.calipers.thoracic.x1 - s.calipers.thoracic.x0)).toFixed(3)
      : "–";
  root.querySelector(".mfv-readout").textContent =
    `zoom ${(s.k / (s.fitScale || s.k)).toFixed(2)}× · cardiac ${fmt(s.calipers.cardiac)} · ` +
    `thoracic ${fmt(s.calipers.thoracic)} · CTR ${ratio}`;
}

function toImage(root, clientX, clientY) {
  const s = root.__mfv;
  const r = root.querySelector(".mfv-viewport").getBoundingClientRect();
  return [(clientX - r.left - s.tx) / s.k, (clientY - r.top - s.ty) / s.k];
}

function setTool(root, tool) {
  root.__mfv.tool = tool;
  root.querySelectorAll("[data-tool]").forEach((b) => b.classList.toggle("mfv-on", b.dataset.tool === tool));
  root.querySelector(".mfv-viewport").style.cursor = tool === "pan" ? "grab" : "crosshair";
}

function attach(root) {
  const vp = root.querySelector(".mfv-viewport");
  root.querySelectorAll("[data-tool]").forEach((b) => (b.onclick = () => setTool(root, b.dataset.tool)));
  root.querySelector("[data-action=fit]").onclick = () => fit(root);
  root.querySelector("[data-action=one]").onclick = () => {
    const s = root.__mfv;
    const r = vp.getBoundingClientRect();
    zoomAt(root, 1 / s.k, r.left + r.width / 2, r.top + r.height / 2);
  };
  vp.addEventListener(
    "wheel",
    (e) => {
      e.preventDefault();
      zoomAt(root, Math.exp(-e.deltaY * 0.0015), e.clientX, e.clientY);
    },
    { passive: false },
  );
  vp.addEventListener("dblclick", () => fit(root));
  vp.addEventListener("pointerdown", (e) => {
    const s = root.__mfv;
    vp.setPointerCapture && vp.setPointerCapture(e.pointerId);
    if (s.tool === "pan") {
      s.drag = { pan: true, x: e.clientX, y: e.clientY, tx: s.tx, ty: s.ty };
      vp.style.cursor = "grabbing";
    } else {
      const [x, y] = toImage(root, e.clientX, e.clientY);
      s.drag = { pan: false, name: s.tool, x0: x, y: y };
      s.calipers[s.tool] = { x0: x, x1: x, y: y };
      draw(root);
    }
  });
  vp.addEventListener("pointermove", (e) => {
    const s = root.__mfv;
    if (!s.drag) return;
    if (s.drag.pan) {
      s.tx = s.drag.tx + (e.clientX - s.drag.x);
      s.ty = s.drag.ty + (e.clientY - s.drag.y);
    } else {
      const [x] = toImage(root, e.clientX, e.clientY);
      s.calipers[s.drag.name] = { x0: s.drag.x0, x1: x, y: s.drag.y };
    }
    draw(root);
  });
  const end = () => {
    const s = root.__mfv;
    if (!s.drag) return;
    const wasCaliper = !s.drag.pan;
    s.drag = null;
    if (wasCaliper) {
      setTool(root, "pan");
      const clean = {};
      for (const [name, c] of Object.entries(s.calipers)) {
        if (Math.abs(c.x1 - c.x0) > 0) clean[name] = { x0: c.x0, x1: c.x1, y: c.y };
      }
      s.send("calipers", { key: s.data.key, ...clean });
    } else {
      vp.style.cursor = "grab";
    }
  };
  vp.addEventListener("pointerup", end);
  vp.addEventListener("pointercancel", end);
  setTool(root, "pan");
}

function zoomAt(root, factor, clientX, clientY) {
  const s = root.__mfv;
  const fitScale = s.fitScale || s.k;
  const k = Math.min(Math.max(s.k * factor, fitScale * 0.5), 32);
  const f = k / s.k;
  const r = root.querySelector(".mfv-viewport").getBoundingClientRect();
  const sx = clientX - r.left;
  const sy = clientY - r.top;
  s.tx = sx - (sx - s.tx) * f;
  s.ty = sy - (sy - s.ty) * f;
  s.k = k;
  draw(root);
}
