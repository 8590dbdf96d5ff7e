// Small DOM helpers. Everything from the API is set as text, never as HTML, so uploaded content cannot inject markup.

/** h("a", {href: "#/x", class: "link", onclick: fn}, "text", child) */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else if (name in element && typeof value !== "string") {
      element[name] = value; // properties such as `disabled`, `checked`, `value`
    } else {
      element.setAttribute(name, value === true ? "" : value);
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export function formatTime(unixSeconds) {
  if (!unixSeconds) return "—";
  return new Date(unixSeconds * 1000).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

export function formatNumber(value, digits = 4) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value !== "number") return String(value);
  // toPrecision then Number drops trailing zeros: 0.0002 rather than 0.0002000
  return Number.isInteger(value) ? value.toLocaleString() : String(Number(value.toPrecision(digits)));
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, status.replaceAll("_", " "));
}

/** The API's message verbatim, with its param/code underneath so the user knows what to fix. */
export function errorBox(error, title = "The server said") {
  const facts = [];
  if (error.param) facts.push(`param: ${error.param}`);
  if (error.code) facts.push(`code: ${error.code}`);
  if (error.status) facts.push(`HTTP ${error.status}`);
  return h(
    "div",
    { class: "error-box", role: "alert" },
    h("strong", {}, `${title}: `),
    h("span", { class: "error-message" }, error.message),
    facts.length ? h("div", { class: "error-facts" }, facts.join(" · ")) : null,
  );
}

export function notice(text) {
  return h("div", { class: "notice", role: "status" }, text);
}

/** A table from column specs {label, cell: row => Node|string, class?}; `empty` is shown when there are no rows. */
export function table(columns, rows, { id, empty = "Nothing here yet.", rowAttrs } = {}) {
  if (rows.length === 0) return h("p", { class: "empty", id }, empty);
  return h(
    "table",
    { id },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.class }, c.label)))),
    h(
      "tbody",
      {},
      rows.map((row) => h("tr", rowAttrs ? rowAttrs(row) : {}, columns.map((c) => h("td", { class: c.class }, c.cell(row))))),
    ),
  );
}

/** Definition list of [label, value] pairs, skipping pairs whose value is null/undefined. */
export function facts(pairs, id) {
  const kept = pairs.filter(([, value]) => value !== null && value !== undefined);
  return h("dl", { class: "facts", id }, kept.map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]));
}

/** A button that asks once more before a destructive action: first click arms it, second click runs it. */
export function confirmButton(label, confirmLabel, action, attrs = {}) {
  let armedUntil = 0;
  const button = h("button", {
    type: "button",
    class: "danger",
    ...attrs,
    onclick: async () => {
      if (Date.now() > armedUntil) {
        armedUntil = Date.now() + 4000;
        button.textContent = confirmLabel;
        setTimeout(() => {
          if (Date.now() > armedUntil) button.textContent = label;
        }, 4100);
        return;
      }
      armedUntil = 0;
      button.disabled = true;
      try {
        await action();
      } finally {
        button.disabled = false;
        button.textContent = label;
      }
    },
  }, label);
  return button;
}

export function card(title, ...children) {
  return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...children);
}

export function option(value, label, selected = false) {
  return h("option", { value, selected }, label ?? value);
}
