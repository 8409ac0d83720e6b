// The shopper's page: one form builds a POST /api/query, the answer fills the edit, the results
// and the list of turns. Choosing a result starts the next turn from that catalog item. The
// method that answers is chosen among those the server offers (GET /api/schema).
"use strict";

const PAGE_SIZE = 12;
const $ = (selector) => document.querySelector(selector);
const state = { schema: null, methods: {}, start: null, turns: [], busy: false, offset: 0 };
// What each kind of method does with the photo (index/methods.py).
const KINDS = {
  real: "Searches with the photo as it is.",
  editor: "A GAN edits the photo toward the chosen values; the edit is searched.",
  prototype: "Moves the photo's embedding by the catalog's mean for each value; it makes no picture.",
  feature: "Moves the photo's embedding with its attribute memory; it makes no picture.",
  hybrid: "A GAN's edit is shown; the search moves the edit's embedding with an attribute memory.",
};

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function showError(message) {
  $("#error").textContent = message ? String(message).split("\n")[0] : "";
}

function describe(attributes) {
  return Object.entries(attributes).map(([name, value]) => `${name} ${value}`).join(", ");
}

// ---- the form: built from /api/schema --------------------------------------------------------

function selectField(group, name, values, blank) {
  const id = `${group}-${name}`;
  const select = el("select", { id, name },
    el("option", { value: "", textContent: blank }),
    ...values.map((value) => el("option", { value, textContent: value })));
  return el("div", { className: "field" }, el("label", { htmlFor: id, textContent: name }), select);
}

function buildForm(schema) {
  const attributes = $("#attributes");
  for (const [name, values] of Object.entries(schema.attributes)) {
    attributes.append(selectField("attr", name, values, "keep"));
  }
  for (const method of schema.methods) {
    state.methods[method.name] = method;
    $("#method").append(el("option", { value: method.name, textContent: method.name }));
  }
  $("#method").value = schema.default_method;
  applyMethod();
  const filters = $("#filters");
  for (const [field, values] of Object.entries(schema.filters || {})) {
    if (values.length) filters.append(selectField("filter", field, values, "any"));
  }
  filters.hidden = !filters.querySelector("select");
  $("#k").max = schema.k_max;
}

// The chosen method's attributes and regions: an attribute it cannot change is kept, a region
// only for a method that edits pixels.
function applyMethod() {
  const method = state.methods[$("#method").value];
  if (!method) return;
  for (const select of $("#attributes").querySelectorAll("select")) {
    select.disabled = !method.attributes.includes(select.name);
    if (select.disabled) select.value = "";
  }
  for (const label of $("#attributes").querySelectorAll(".check")) label.remove();
  for (const region of method.regions) {
    const box = el("input", { type: "checkbox", name: "region", value: region });
    $("#attributes").append(el("label", { className: "check" }, box, ` only the ${region}`));
  }
  $("#method-note").textContent = KINDS[method.kind] || "";
}

function chosen(fieldset) {
  const out = {};
  for (const select of $(fieldset).querySelectorAll("select")) {
    if (select.value) out[select.name] = select.value;
  }
  return out;
}

// ---- the start of a query: a photo or a catalog item ------------------------------------------

function setStart(start) {
  state.start = start;
  const thumb = el("img", { src: start.url, alt: "" });
  $("#start").replaceChildren(thumb, el("span", { textContent: start.label }));
  showError("");
}

function startFromFile(file) {
  if (!file) return;
  setStart({ file, url: URL.createObjectURL(file), label: `Photo: ${file.name}` });
}

function startFromItem(item) {
  setStart({ id: item.id, url: item.image_url, label: `Catalog item ${item.id}` });
}

async function loadItems(offset) {
  try {
    const page = await api(`/api/items?offset=${offset}&limit=${PAGE_SIZE}`);
    state.offset = offset;
    $("#items").replaceChildren(...page.items.map((item) => el("li", {}, el("button", {
      type: "button", className: "item", onclick: () => startFromItem(item),
      ariaLabel: `Start from item ${item.id}: ${describe(item.attributes)}`,
    }, el("img", { src: item.image_url, alt: "" })))));
    const last = Math.min(offset + PAGE_SIZE, page.total);
    $("#page").textContent = `${page.total ? offset + 1 : 0}–${last} of ${page.total}`;
    $("#prev").disabled = offset === 0;
    $("#next").disabled = last >= page.total;
  } catch (error) {
    showError(error.message);
  }
}

// ---- one turn: the request, the busy state and the answer -------------------------------------

function setBusy(busy) {
  state.busy = busy;
  $("#query").setAttribute("aria-busy", String(busy));
  $("#view").setAttribute("aria-busy", String(busy));
  $("#search").disabled = busy;
  for (const button of document.querySelectorAll(".result, .turn")) button.disabled = busy;
  $("#status").textContent = busy ? "Searching…" : $("#status").textContent;
  $("#status").classList.toggle("busy", busy);
}

function chosenQuery() {
  const region = $("#attributes").querySelector("input[name=region]:checked");
  return { method: $("#method").value, targets: chosen("#attributes"),
    region: region ? region.value : null, where: chosen("#filters"), k: $("#k").value };
}

function formData(start, query) {
  const form = new FormData();
  if (start.file) form.append("image", start.file);
  else form.append("item_id", start.id);
  if (query.method) form.append("method", query.method);
  form.append("targets", JSON.stringify(query.targets));
  if (query.region) form.append("only_region", query.region);
  form.append("k", query.k);
  if (Object.keys(query.where).length) form.append("where", JSON.stringify(query.where));
  return form;
}

async function search() {
  if (state.busy) return;
  if (!state.start) return showError("Choose a photo or a catalog item to start from.");
  if (!$("#k").reportValidity()) return;
  const start = state.start;
  const query = chosenQuery();
  showError("");
  setBusy(true);
  try {
    const answer = await api("/api/query", { method: "POST", body: formData(start, query) });
    state.turns.push({ start, query, answer });
    show(state.turns.length - 1);
    $("#status").textContent = `${answer.results.length} results in ${Math.round(answer.timing_ms.total)} ms`;
  } catch (error) {
    $("#status").textContent = "";
    showError(error.message);
  } finally {
    setBusy(false);
  }
  if (document.activeElement === document.body) $("#results-title").focus();
}

function figure(id, src) {
  const img = $(id);
  img.hidden = !src;
  img.closest("figure").classList.toggle("none", !src);
  if (src) img.src = src;
}

function resultCard(result) {
  const attributes = Object.entries(result.attributes).map(([name, value]) =>
    el("li", { className: "attr" }, `${name} `, el("strong", { textContent: value })));
  const metadata = Object.keys(state.schema?.filters || {})
    .filter((field) => result[field] != null).map((field) => `${field} ${result[field]}`).join(" · ");
  const button = el("button", {
    type: "button", className: "result", onclick: () => { startFromItem(result); search(); },
    ariaLabel: `Refine from result ${result.rank}, item ${result.id}: ` +
      `${describe(result.attributes)}, score ${result.score.toFixed(3)}`,
  }, el("img", { src: result.image_url, alt: "" }),
  el("span", { className: "rank", textContent: `#${result.rank} · item ${result.id}` }),
  el("ul", { className: "attrs" }, ...attributes),
  el("span", { className: "quiet", textContent: metadata }),
  el("span", { className: "score", textContent: `score ${result.score.toFixed(3)}` }));
  return el("li", {}, button);
}

function show(index) {
  const { answer } = state.turns[index];
  const method = state.methods[answer.method];
  const pictureless = Boolean(method) && !method.edits_pixels;
  $("#view").classList.add("filled");
  figure("#img-photo", answer.image);
  figure("#img-edited", answer.edited);
  figure("#img-mask", answer.mask);
  // A method that moves vectors has no edit and no mask to show: the page says so instead.
  for (const id of ["#img-edited", "#img-mask"]) $(id).closest("figure").hidden = pictureless;
  $("#no-picture").hidden = !pictureless;
  $("#no-picture").textContent = pictureless ? `No edited picture: ${answer.method} searched ` +
    "by moving the photo's embedding toward the chosen values." : "";
  $("#results").replaceChildren(...answer.results.map(resultCard));
  renderTurns(index);
}

function turnText({ start, query, answer }, i) {
  let text = `${i + 1}. ${start.label} → ${describe(answer.targets) || "no edit"} by ${answer.method}`;
  if (query.region && answer.edited) text += ` (only the ${query.region})`;
  if (Object.keys(query.where).length) text += `; only ${describe(query.where)}`;
  return `${text}: ${answer.results.length} results`;
}

function renderTurns(current) {
  $("#turns").replaceChildren(...state.turns.map((turn, i) => {
    const button = el("button", { type: "button", className: "turn", onclick: () => show(i) },
      el("img", { src: turn.start.url, alt: "" }), el("span", { textContent: turnText(turn, i) }));
    if (i === current) button.setAttribute("aria-current", "true");
    return el("li", {}, button);
  }));
}

// ---- wiring -----------------------------------------------------------------------------------

function wire() {
  const form = $("#query");
  form.addEventListener("submit", (event) => { event.preventDefault(); search(); });
  // Enter on a select or a checkbox searches too, as it does in a text field.
  form.addEventListener("keydown", (event) => {
    const tag = event.target.tagName;
    if (event.key === "Enter" && (tag === "SELECT" || event.target.type === "checkbox")) {
      event.preventDefault();
      search();
    }
  });
  $("#photo").addEventListener("change", (event) => startFromFile(event.target.files[0]));
  $("#method").addEventListener("change", applyMethod);
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    startFromFile(event.dataTransfer.files[0]);
  });
  $("#catalog").addEventListener("toggle", () => {
    if ($("#catalog").open && !$("#items").children.length) loadItems(0);
  });
  $("#prev").addEventListener("click", () => loadItems(Math.max(0, state.offset - PAGE_SIZE)));
  $("#next").addEventListener("click", () => loadItems(state.offset + PAGE_SIZE));
}

async function init() {
  wire();
  try {
    state.schema = await api("/api/schema");
    buildForm(state.schema);
  } catch (error) {
    showError(error.message);
  }
  api("/api/health").then((health) => {
    $("#health").textContent =
      `${health.items} catalog items · default method ${health.default_method} · ${health.device}`;
  }).catch(() => {});
}

init();
