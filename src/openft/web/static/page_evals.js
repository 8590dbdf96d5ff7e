// Evaluations: runs comparing prompting strategies and fine-tuned models, and their HTML reports with plots.

import { api, listAll } from "./api.js";
import { card, errorBox, facts, formatNumber, formatTime, h, notice, replace, statusBadge, table } from "./dom.js";

const FINAL = ["succeeded", "failed", "cancelled"];
const POLL_MS = 2000;

function progressText(run) {
  const p = run.progress;
  return p && p.total ? `${p.completed}/${p.total}` : "—";
}

function bestStrategy(run) {
  return run.summary?.ranking?.[0] ?? "—";
}

function runsTable(runs) {
  return table(
    [
      { label: "Evaluation", cell: (r) => h("a", { href: `#/evaluations/${r.id}` }, h("code", {}, r.id)) },
      { label: "Status", cell: (r) => statusBadge(r.status) },
      { label: "Model", cell: (r) => r.model },
      { label: "Strategies", cell: (r) => (r.strategies ?? []).join(", ") },
      { label: "Progress", cell: progressText, class: "num" },
      { label: "Best", cell: bestStrategy },
      { label: "Created", cell: (r) => formatTime(r.created_at) },
    ],
    runs,
    {
      id: "evaluations-table",
      empty: "No evaluations yet. Start one with `openft eval` or POST /v1/evaluations.",
      rowAttrs: (r) => ({ "data-evaluation-id": r.id }),
    },
  );
}

export async function evaluationsPage(view, context) {
  const listArea = h("div", {}, notice("Loading evaluations…"));
  view.append(h("h1", {}, "Evaluations"), card(null, listArea));
  const refresh = async () => {
    try {
      const runs = await listAll("/evaluations", { maxPages: 5 });
      if (!context.active) return false;
      replace(listArea, runsTable(runs));
      return runs.some((r) => !FINAL.includes(r.status));
    } catch (error) {
      if (context.active) replace(listArea, errorBox(error));
      return false;
    }
  };
  if (await refresh()) context.every(refresh, POLL_MS);
}

function seconds(value) {
  return typeof value === "number" ? value.toFixed(3) : "—";
}

/** The API gives quality as {mean, low, high, n} (a bootstrap interval), or null when nothing was scored. */
function qualityText(quality) {
  if (!quality) return "—";
  if (typeof quality === "number") return formatNumber(quality, 3);
  return `${quality.mean.toFixed(3)} [${quality.low.toFixed(3)}, ${quality.high.toFixed(3)}]`;
}

function summaryTable(summary) {
  return table(
    [
      { label: "Rank", cell: (s) => String(summary.ranking.indexOf(s.name) + 1), class: "num" },
      { label: "Strategy", cell: (s) => s.name },
      { label: "Model", cell: (s) => s.model },
      { label: `${summary.metric} (95% CI)`, cell: (s) => qualityText(s.quality), class: "num" },
      { label: "Prompt tokens (mean)", cell: (s) => formatNumber(s.mean_prompt_tokens, 4), class: "num" },
      { label: "Completion tokens (mean)", cell: (s) => formatNumber(s.mean_completion_tokens, 3), class: "num" },
      { label: "Latency p50 / p95 (s)", cell: (s) => `${seconds(s.latency_p50_s)} / ${seconds(s.latency_p95_s)}`, class: "num" },
      { label: "Errors", cell: (s) => String(s.n_errors), class: "num" },
    ],
    [...summary.strategies].sort((a, b) => summary.ranking.indexOf(a.name) - summary.ranking.indexOf(b.name)),
    { id: "evaluation-summary" },
  );
}

function changeText(c) {
  return `${c.change >= 0 ? "+" : ""}${c.change.toFixed(3)} [${c.low.toFixed(3)}, ${c.high.toFixed(3)}]`;
}

function changeVerdict(c) {
  if (c.forgot) return h("span", { class: "badge status-failed" }, "worse: forgot");
  if (c.significant && c.worse) return "slightly worse (within tolerance)";
  return c.significant ? "better" : "no significant change";
}

/** Each fine-tuned model against its base on the general set: fine-tuned minus base with its paired CI. */
function forgettingView(forgetting) {
  const set = forgetting.set;
  return h("div", {},
    h("p", {}, `${set.n_items} general items (${set.n_conversations} conversations, ${set.n_questions} simple ` +
      `questions) of ${set.name}; change = fine-tuned minus base, tested on the same items.`),
    forgetting.warnings.map((w) => h("div", { class: "error-box", role: "alert" }, h("strong", {}, "Warning: "), w)),
    table(
      [
        { label: "Fine-tuned model", cell: (c) => c.fine_tuned },
        { label: "Measure", cell: (c) => c.label },
        { label: "Base", cell: (c) => c.base_mean.toFixed(3), class: "num" },
        { label: "Fine-tuned", cell: (c) => c.fine_tuned_mean.toFixed(3), class: "num" },
        { label: "Change (95% CI)", cell: changeText, class: "num" },
        { label: "p", cell: (c) => formatNumber(c.p_value, 3), class: "num" },
        { label: "Verdict", cell: changeVerdict },
      ],
      forgetting.comparisons,
      { id: "evaluation-forgetting", empty: "No fine-tuned model was checked." },
    ));
}

/** The HTML report needs the Authorization header, so it is fetched here and shown from memory. */
async function reportView(runId, signal) {
  const response = await api(`/evaluations/${runId}/report?format=html`, { raw: true, signal });
  const html = await response.text();
  const blobUrl = URL.createObjectURL(new Blob([html], { type: "text/html" }));
  signal.addEventListener("abort", () => URL.revokeObjectURL(blobUrl));
  // The report has no scripts; the empty sandbox keeps it that way and away from this page's stored key.
  const frame = h("iframe", { id: "report-frame", title: "Evaluation report", sandbox: "", srcdoc: html });
  return h("div", {},
    h("p", {},
      h("a", { href: blobUrl, target: "_blank", rel: "noopener", id: "report-open" }, "Open the report in a new tab"),
      " · ",
      h("a", { href: blobUrl, download: `${runId}-report.html` }, "Download HTML")),
    frame);
}

export async function evaluationPage(view, context, runId) {
  const header = h("div", {}, h("h1", {}, "Evaluation ", h("code", {}, runId)), notice("Loading…"));
  const summaryArea = h("div");
  const reportArea = h("div");
  view.append(h("p", {}, h("a", { href: "#/evaluations" }, "← Evaluations")), header, summaryArea,
    card("Report", reportArea));

  const showRun = (run) => {
    replace(header,
      h("h1", {}, "Evaluation ", h("code", {}, run.id), " ", h("span", { id: "evaluation-status" }, statusBadge(run.status))),
      run.error ? errorBox(typeof run.error === "string" ? { message: run.error } : run.error, "The evaluation failed") : null,
      facts([
        ["Model", run.model],
        ["Fine-tuned models", run.fine_tuned_models?.length ? run.fine_tuned_models.join(", ") : null],
        ["Strategies", (run.strategies ?? []).join(", ")],
        ["Held-out file", run.eval_file ? h("a", { href: `#/files/${run.eval_file}` }, run.eval_file) : null],
        ["Examples file", run.training_file ? h("a", { href: `#/files/${run.training_file}` }, run.training_file) : null],
        ["Progress", progressText(run)],
        ["Created", formatTime(run.created_at)],
        ["Finished", run.finished_at ? formatTime(run.finished_at) : null],
      ]));
    replace(summaryArea, run.summary ? card(`Results (${run.summary.metric})`, summaryTable(run.summary)) : null,
      run.summary?.forgetting ? card("Forgetting check (general ability)", forgettingView(run.summary.forgetting)) : null);
  };

  const refresh = async () => {
    const run = await api(`/evaluations/${runId}`, { signal: context.signal });
    if (!context.active) return false;
    showRun(run);
    if (!FINAL.includes(run.status)) {
      replace(reportArea, notice("The report is written when the evaluation has finished."));
      return true;
    }
    try {
      replace(reportArea, await reportView(runId, context.signal));
    } catch (error) {
      if (error.name !== "AbortError") replace(reportArea, errorBox(error));
    }
    return false;
  };
  try {
    if (await refresh()) context.every(refresh, POLL_MS);
  } catch (error) {
    if (error.name !== "AbortError") replace(header, h("h1", {}, "Evaluation ", h("code", {}, runId)), errorBox(error));
  }
}
