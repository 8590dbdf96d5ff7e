// Distillations (/v1/distillations): each job's running tally of the teacher's tokens and cost, and the report of
// which prompt lines were kept, dropped (with the filter's rule and reason) or failed.

import { api, listAll } from "./api.js";
import {
  card, confirmButton, errorBox, facts, formatNumber, formatTime, h, notice, replace, statusBadge, table,
} from "./dom.js";

const FINAL = ["succeeded", "failed", "cancelled"];
const POLL_MS = 2000;

/** kept / dropped / failed: the final result once there is one, else the running progress. */
function counts(d) {
  const source = d.result ?? d.progress ?? {};
  return { kept: source.kept ?? 0, dropped: source.dropped ?? 0, failed: source.failed ?? 0 };
}

function tokensText(usage) {
  return usage ? formatNumber(usage.total_tokens ?? 0) : "—";
}

function costText(usage) {
  if (!usage) return "—";
  if (usage.cost_usd === null || usage.cost_usd === undefined) return "not priced";
  return `$${usage.cost_usd.toFixed(4)}`;
}

function distillationsTable(items) {
  return table(
    [
      { label: "Distillation", cell: (d) => h("a", { href: `#/distillations/${d.id}` }, h("code", {}, d.id)) },
      { label: "Status", cell: (d) => statusBadge(d.status) },
      { label: "Teacher", cell: (d) => d.teacher.model },
      { label: "Kept", cell: (d) => String(counts(d).kept), class: "num" },
      { label: "Dropped", cell: (d) => String(counts(d).dropped), class: "num" },
      { label: "Failed", cell: (d) => String(counts(d).failed), class: "num" },
      { label: "Teacher tokens", cell: (d) => tokensText(d.usage), class: "num" },
      { label: "Cost", cell: (d) => costText(d.usage), class: "num" },
      { label: "Created", cell: (d) => formatTime(d.created_at) },
    ],
    items,
    {
      id: "distillations-table",
      empty: "No distillations yet. Start one with `openft distill create` or POST /v1/distillations.",
      rowAttrs: (d) => ({ "data-distillation-id": d.id }),
    },
  );
}

export async function distillationsPage(view, context) {
  const listArea = h("div", {}, notice("Loading distillations…"));
  view.append(
    h("h1", {}, "Distillations"),
    card(null, h("p", { class: "hint" },
      "A teacher model answers a file of prompts; weak answers are filtered out and the rest become a training ",
      "file. Start one with `openft distill create` or POST /v1/distillations (docs/distillation.md)."), listArea),
  );
  const refresh = async () => {
    try {
      const items = await listAll("/distillations", { maxPages: 5 });
      if (context.active) replace(listArea, distillationsTable(items));
    } catch (error) {
      if (context.active) replace(listArea, errorBox(error));
    }
  };
  await refresh();
  context.every(refresh, POLL_MS);
}

function progressBar(progress) {
  const total = progress?.total ?? 0;
  const answered = progress?.answered ?? 0;
  const share = total ? Math.min(100, (100 * answered) / total) : 0;
  return h("div", { class: "progress", id: "distill-progress" },
    h("div", { class: "progress-bar", style: `width: ${share}%` }),
    h("span", {}, total ? `${answered} of ${total} prompts answered` : "waiting for a worker"));
}

function tallyFacts(d) {
  const p = d.progress ?? {};
  const u = d.usage;
  const failures = Object.entries(u?.failures_by_status ?? {}).map(([status, n]) => `${status} × ${n}`).join(", ");
  return facts([
    ["Prompts", formatNumber(p.total)],
    ["Answered", `${formatNumber(p.answered ?? 0)} (${formatNumber(p.from_cache ?? 0)} from the cache)`],
    ["Kept / dropped / failed", `${counts(d).kept} / ${counts(d).dropped} / ${counts(d).failed}`],
    ["Teacher requests", u ? `${formatNumber(u.teacher_requests)} (${formatNumber(u.retries)} retries)` : null],
    ["Failures by status", failures || null],
    ["Answers paid for", u ? formatNumber(u.answers_paid) : null],
    ["Teacher tokens", u ? `${formatNumber(u.prompt_tokens)} prompt + ${formatNumber(u.completion_tokens)} completion` : null],
    ["Cost", u ? costText(u) : null],
    ["Priced as", u?.price ? `${u.price.model} ($${u.price.input_per_1m} / $${u.price.output_per_1m} per 1M tokens)` : null],
    ["Price note", u?.price_note ?? null],
  ], "distill-tally");
}

function outputArea(d) {
  if (!d.output_file) return null;
  const link = h("a", { href: `#/files/${d.output_file}` }, h("code", { id: "distill-output-file" }, d.output_file));
  return card("Training file",
    h("p", {}, "The kept answers: ", link),
    d.status === "succeeded"
      ? h("p", {}, h("a", { class: "button", id: "distill-fine-tune", href: `#/jobs?training_file=${d.output_file}` },
        "Fine-tune on this file →"))
      : h("p", { class: "hint" }, "The file did not pass validation; open it to read why."));
}

/** One row per prompt line: kept, dropped (the filter's rule, reason and grader score) or failed (the error). */
function reportRows(report) {
  const rows = [
    ...(report.kept_lines ?? []).map((line) => ({ line, outcome: "kept", rule: null, reason: null, score: null })),
    ...(report.dropped_lines ?? []).map((d) => ({ line: d.line, outcome: "dropped", rule: d.rule, reason: d.reason, score: d.score })),
    ...(report.failed_lines ?? []).map((f) => ({ line: f.line, outcome: "failed", rule: null, reason: f.error, score: null })),
  ];
  return rows.sort((a, b) => a.line - b.line);
}

function reportArea(report) {
  if (report.prompts === undefined) return notice("The report is written when the distillation finishes.");
  const byReason = Object.entries(report.dropped_by_reason ?? {});
  return h("div", {},
    h("p", { class: "counts", id: "distill-summary" },
      h("span", { class: "pill" }, `${report.kept} kept`), h("span", { class: "pill" }, `${report.dropped} dropped`),
      h("span", { class: "pill" }, `${report.failed} failed`),
      byReason.map(([rule, n]) => h("span", { class: "pill" }, h("code", {}, rule), ` × ${n}`)),
      report.verdicts_from_cache ? h("span", { class: "pill" }, `${report.verdicts_from_cache} grader verdicts from the cache`) : null),
    table(
      [
        { label: "Line", cell: (r) => String(r.line), class: "num line" },
        { label: "Outcome", cell: (r) => statusBadge(r.outcome) },
        { label: "Rule", cell: (r) => (r.rule ? h("code", {}, r.rule) : "—") },
        { label: "Reason", cell: (r) => r.reason ?? "", class: "details" },
        { label: "Score", cell: (r) => formatNumber(r.score), class: "num" },
      ],
      reportRows(report),
      { id: "distill-report-table", empty: "No prompts.", rowAttrs: (r) => ({ "data-line": r.line, "data-outcome": r.outcome }) },
    ));
}

export async function distillationPage(view, context, distillationId) {
  const header = h("div", {}, h("h1", {}, "Distillation ", h("code", {}, distillationId)), notice("Loading…"));
  const tallyArea = h("div");
  const outputSlot = h("div");
  const reportSlot = h("div", {}, notice("Loading the report…"));
  view.append(h("p", {}, h("a", { href: "#/distillations" }, "← Distillations")), header,
    card("Teacher tally", tallyArea), outputSlot, card("Kept and dropped, by line of the prompt file", reportSlot));
  const path = `/distillations/${encodeURIComponent(distillationId)}`;

  const refresh = async () => {
    const [d, report] = await Promise.all([
      api(path, { signal: context.signal }), api(`${path}/report`, { signal: context.signal }),
    ]);
    if (!context.active) return false;
    const running = !FINAL.includes(d.status);
    replace(header,
      h("h1", {}, "Distillation ", h("code", {}, d.id), " ", h("span", { id: "distill-status" }, statusBadge(d.status))),
      d.error ? errorBox(d.error, "The distillation failed") : null,
      facts([
        ["Teacher", d.teacher.base_url ? `${d.teacher.model} at ${d.teacher.base_url}` : `${d.teacher.model} (served by openft)`],
        ["Student model", d.model ?? null],
        ["Prompt file", h("a", { href: `#/files/${d.input_file}` }, h("code", {}, d.input_file))],
        ["Filter", d.filter ? h("code", {}, JSON.stringify(d.filter)) : "none"],
        ["Created", formatTime(d.created_at)],
        ["Finished", d.finished_at ? formatTime(d.finished_at) : null],
      ]),
      running ? h("p", {}, confirmButton("Cancel", "Really cancel?", async () => {
        await api(`${path}/cancel`, { method: "POST" });
        await refresh();
      }, { id: "distill-cancel" })) : null);
    replace(tallyArea, running ? progressBar(d.progress) : null, tallyFacts(d));
    replace(outputSlot, outputArea(d));
    replace(reportSlot, reportArea(report));
    return running;
  };
  try {
    if (await refresh()) context.every(refresh, POLL_MS);
  } catch (error) {
    if (error.name !== "AbortError") replace(header, h("h1", {}, "Distillation ", h("code", {}, distillationId)), errorBox(error));
  }
}
