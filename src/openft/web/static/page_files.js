// Files: upload a training file, list uploads, and read a file's validation report line by line.

import { api, listAll } from "./api.js";
import {
  card, confirmButton, errorBox, facts, formatBytes, formatNumber, formatTime, h, notice, option, replace, statusBadge,
  table,
} from "./dom.js";

function uploadForm(baseModels) {
  const fileInput = h("input", { id: "upload-file", type: "file", accept: ".jsonl", required: true });
  const modelSelect = h("select", { id: "upload-model" },
    option("", "the server's default"), baseModels.map((m) => option(m.id)));
  const submit = h("button", { type: "submit", id: "upload-submit" }, "Upload and validate");
  const message = h("div", { id: "upload-message" });
  return h(
    "form",
    {
      id: "upload-form",
      class: "row-form",
      onsubmit: async (event) => {
        event.preventDefault();
        const file = fileInput.files[0];
        if (!file) return;
        const form = new FormData();
        form.append("purpose", "fine-tune");
        if (modelSelect.value) form.append("model", modelSelect.value);
        form.append("file", file, file.name);
        submit.disabled = true;
        replace(message, notice(`Uploading ${file.name} (${formatBytes(file.size)}) and validating every line…`));
        try {
          const created = await api("/files", { method: "POST", body: form });
          location.hash = `#/files/${created.id}`;
        } catch (error) {
          replace(message, errorBox(error, "Upload refused"));
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("label", {}, "Chat JSONL file", fileInput),
    h("label", {}, "Count tokens with the tokenizer of", modelSelect),
    submit,
    message,
  );
}

function filesTable(files, reload) {
  return table(
    [
      { label: "File", cell: (f) => h("a", { href: `#/files/${f.id}` }, f.filename) },
      { label: "ID", cell: (f) => h("code", {}, f.id) },
      { label: "Purpose", cell: (f) => f.purpose },
      { label: "Size", cell: (f) => formatBytes(f.bytes), class: "num" },
      { label: "Status", cell: (f) => statusBadge(f.status) },
      { label: "Details", cell: (f) => f.status_details ?? "", class: "details" },
      { label: "Uploaded", cell: (f) => formatTime(f.created_at) },
      {
        label: "",
        cell: (f) => confirmButton("Delete", "Really delete?", async () => {
          await api(`/files/${f.id}`, { method: "DELETE" });
          await reload();
        }, { class: "danger small" }),
      },
    ],
    files,
    { id: "files-table", empty: "No files yet. Upload a chat JSONL file above.", rowAttrs: (f) => ({ "data-file-id": f.id }) },
  );
}

export async function filesPage(view, context) {
  const listArea = h("div", {}, notice("Loading files…"));
  const formArea = h("div");
  view.append(
    h("h1", {}, "Files"),
    card("Upload training data", h("p", { class: "hint" },
      "One JSON object per line in OpenAI's chat format. Every line is checked; problems are listed with their line ",
      "number."), formArea),
    card("Uploaded files", listArea),
  );
  const reload = async () => {
    try {
      const files = await listAll("/files?order=desc");
      if (context.active) replace(listArea, filesTable(files, reload));
    } catch (error) {
      replace(listArea, errorBox(error));
    }
  };
  const models = await api("/models").catch(() => ({ data: [] }));
  replace(formArea, uploadForm(models.data.filter((m) => m.owned_by === "openft")));
  await reload();
}

function distribution(d) {
  if (!d) return null;
  return `min ${formatNumber(d.min)} · mean ${formatNumber(d.mean, 3)} · p50 ${formatNumber(d.p50)} · ` +
    `p95 ${formatNumber(d.p95)} · max ${formatNumber(d.max)} · total ${formatNumber(d.total)}`;
}

function issuesTable(issues, id, empty) {
  return table(
    [
      { label: "Line", cell: (e) => (e.line === null ? "whole file" : String(e.line)), class: "num line" },
      { label: "Code", cell: (e) => h("code", {}, e.code), class: "code" },
      { label: "Field", cell: (e) => (e.field ? h("code", {}, e.field) : "—") },
      { label: "Message", cell: (e) => e.message, class: "details" },
    ],
    issues,
    { id, empty },
  );
}

function countsLine(counts) {
  const entries = Object.entries(counts || {});
  if (entries.length === 0) return null;
  return h("p", { class: "counts" }, entries.map(([code, n]) => h("span", { class: "pill" }, h("code", {}, code), ` × ${n}`)));
}

function validationReport(report) {
  const stats = report.stats || {};
  const openaiTokens = Object.values(report.openai_tokens || {}).map((t) => [
    `OpenAI tokens (${t.encoding})`, formatNumber(t.total_tokens),
  ]);
  const shownErrors = report.errors.length < report.n_errors
    ? h("p", { class: "hint" }, `Showing the first ${report.errors.length} of ${report.n_errors} errors.`) : null;
  return h(
    "div",
    { id: "validation-report" },
    h("p", { class: `verdict ${report.ok ? "ok" : "bad"}`, id: "validation-verdict" },
      report.ok
        ? `Valid ${report.format} file: ${stats.n_valid} examples can be trained.`
        : `${report.n_errors} error${report.n_errors === 1 ? "" : "s"}: fix them and upload the file again.`),
    card(`Errors (${report.n_errors})`, countsLine(report.error_counts), shownErrors,
      issuesTable(report.errors, "validation-errors", "No errors.")),
    report.n_warnings ? card(`Warnings (${report.n_warnings})`, countsLine(report.warning_counts),
      issuesTable(report.warnings, "validation-warnings", "No warnings.")) : null,
    card("Statistics", facts([
      ["Format", report.format ?? "not recognised"],
      ["Lines", formatNumber(stats.n_lines)],
      ["Examples", formatNumber(stats.n_examples)],
      ["Valid examples", formatNumber(stats.n_valid)],
      ["Duplicates", formatNumber(stats.n_duplicates)],
      ["Messages per example", distribution(stats.messages_per_example)],
      ["Tokenizer", stats.tokenizer],
      ["Context length", stats.context_length ? formatNumber(stats.context_length) : null],
      ["Tokens per example", distribution(stats.tokens_per_example)],
      ["Trained (assistant) tokens per example", distribution(stats.assistant_tokens_per_example)],
      ["Examples over the context length", stats.n_over_context === null ? null : formatNumber(stats.n_over_context)],
      ["Billable tokens per epoch", stats.billable_tokens_per_epoch ? formatNumber(stats.billable_tokens_per_epoch) : null],
      ...openaiTokens,
    ], "validation-stats")),
  );
}

export async function filePage(view, context, fileId) {
  const header = h("div");
  const body = h("div", {}, notice("Loading the validation report…"));
  view.append(h("p", {}, h("a", { href: "#/files" }, "← Files")), header, body);
  let file;
  try {
    file = await api(`/files/${encodeURIComponent(fileId)}`, { signal: context.signal });
  } catch (error) {
    replace(body, errorBox(error));
    return;
  }
  replace(header,
    h("h1", {}, file.filename, " ", statusBadge(file.status)),
    facts([
      ["ID", h("code", {}, file.id)],
      ["Purpose", file.purpose],
      ["Size", formatBytes(file.bytes)],
      ["Uploaded", formatTime(file.created_at)],
      ["Summary", file.status_details],
    ]),
    file.status === "processed" && file.purpose === "fine-tune"
      ? h("p", {}, h("a", { class: "button", href: `#/jobs?training_file=${file.id}` }, "Fine-tune on this file →"))
      : null,
  );
  if (file.purpose !== "fine-tune") {
    replace(body, notice(`Files with purpose '${file.purpose}' are stored as they are; only fine-tune files are validated.`));
    return;
  }
  try {
    replace(body, validationReport(await api(`/files/${encodeURIComponent(fileId)}/validation`, { signal: context.signal })));
  } catch (error) {
    replace(body, errorBox(error));
  }
}
