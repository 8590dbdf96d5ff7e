// OpenAI-compatible evals (/v1/evals): evals, their runs with per-criterion pass rates, and output items with
// each grader's score and reason.

import { api, listAll } from "./api.js";
import { card, errorBox, facts, formatTime, h, notice, replace, statusBadge, table } from "./dom.js";

const FINAL = ["completed", "failed", "canceled"];
const POLL_MS = 2000;

function percent(passed, failed) {
  const total = passed + failed;
  return total ? `${Math.round((100 * passed) / total)}%` : "—";
}

function countsText(run) {
  const c = run.result_counts;
  return `${c.passed} passed · ${c.failed} failed · ${c.errored} errored (of ${c.total})`;
}

export async function oaiEvalsPage(view, context) {
  const area = h("div", {}, notice("Loading evals…"));
  view.append(h("h1", {}, "Evals"), card(null, area));
  try {
    const evals = await listAll("/evals", { maxPages: 5 });
    if (!context.active) return;
    replace(area, table(
      [
        { label: "Eval", cell: (e) => h("a", { href: `#/evals/${e.id}` }, h("code", {}, e.id)) },
        { label: "Name", cell: (e) => e.name || "—" },
        { label: "Testing criteria", cell: (e) => e.testing_criteria.map((c) => `${c.name} (${c.type})`).join(", ") },
        { label: "Created", cell: (e) => formatTime(e.created_at) },
      ],
      evals,
      { id: "oai-evals-table", empty: "No evals yet. Create one with client.evals.create or `openft evals create`." },
    ));
  } catch (error) {
    if (context.active) replace(area, errorBox(error));
  }
}

function runsTable(evalId, runs) {
  return table(
    [
      { label: "Run", cell: (r) => h("a", { href: `#/evals/${evalId}/runs/${r.id}` }, h("code", {}, r.id)) },
      { label: "Name", cell: (r) => r.name },
      { label: "Status", cell: (r) => statusBadge(r.status) },
      { label: "Model", cell: (r) => r.model },
      { label: "Results", cell: countsText },
      ...[...new Set(runs.flatMap((r) => r.per_testing_criteria_results.map((c) => c.testing_criteria)))].map((name) => ({
        label: `${name} pass rate`,
        class: "num",
        cell: (r) => {
          const c = r.per_testing_criteria_results.find((x) => x.testing_criteria === name);
          return c ? percent(c.passed, c.failed) : "—";
        },
      })),
      { label: "Created", cell: (r) => formatTime(r.created_at) },
    ],
    runs,
    { id: "oai-runs-table", empty: "No runs yet. Start one with client.evals.runs.create or `openft evals run`." },
  );
}

export async function oaiEvalPage(view, context, evalId) {
  const header = h("div", {}, h("h1", {}, "Eval ", h("code", {}, evalId)));
  const runsArea = h("div", {}, notice("Loading runs…"));
  view.append(h("p", {}, h("a", { href: "#/evals" }, "← Evals")), header, card("Runs", runsArea));
  try {
    const evaluation = await api(`/evals/${evalId}`, { signal: context.signal });
    replace(header, h("h1", {}, evaluation.name || "Eval", " ", h("code", {}, evaluation.id)),
      facts([
        ["Testing criteria", evaluation.testing_criteria.map((c) => `${c.name} (${c.type})`).join(", ")],
        ["Created", formatTime(evaluation.created_at)],
      ]));
  } catch (error) {
    if (error.name !== "AbortError") replace(header, h("h1", {}, "Eval ", h("code", {}, evalId)), errorBox(error));
    return;
  }
  const refresh = async () => {
    const runs = await listAll(`/evals/${evalId}/runs`, { maxPages: 5 });
    if (!context.active) return false;
    replace(runsArea, runsTable(evalId, runs));
    return runs.some((r) => !FINAL.includes(r.status));
  };
  if (await refresh()) context.every(refresh, POLL_MS);
}

function resultsCell(item) {
  return h("ul", { class: "grader-results" }, ...item.results.map((r) =>
    h("li", { "data-criterion": r.name },
      h("strong", {}, r.name), ` ${Number(r.score).toFixed(3)} `, statusBadge(r.passed ? "passed" : "failed"),
      r.reason ? h("div", { class: "grader-reason" }, r.reason) : null)));
}

function itemsTable(items) {
  return table(
    [
      { label: "#", cell: (i) => String(i.datasource_item_id), class: "num" },
      { label: "Status", cell: (i) => statusBadge(i.status) },
      { label: "Item", cell: (i) => h("code", {}, JSON.stringify(i.datasource_item).slice(0, 300)) },
      { label: "Output", cell: (i) => (i.sample.error ? `error: ${i.sample.error.message}` : (i.sample.output ?? []).map((o) => o.content).join(" ")) },
      { label: "Graders (score, result, reason)", cell: resultsCell },
    ],
    items,
    { id: "oai-items-table", empty: "No output items yet.", rowAttrs: (i) => ({ "data-item-status": i.status }) },
  );
}

export async function oaiRunPage(view, context, evalId, runId) {
  const header = h("div", {}, h("h1", {}, "Run ", h("code", {}, runId)), notice("Loading…"));
  const criteriaArea = h("div");
  const filter = h("select", { id: "oai-items-filter" },
    h("option", { value: "" }, "all items"), h("option", { value: "fail" }, "failing"), h("option", { value: "pass" }, "passing"));
  const itemsArea = h("div", {}, notice("Loading output items…"));
  view.append(h("p", {}, h("a", { href: `#/evals/${evalId}` }, "← Runs")), header,
    card("Pass rate per testing criterion", criteriaArea), card("Output items", h("p", {}, "Show ", filter), itemsArea));

  const loadItems = async () => {
    const status = filter.value ? `&status=${filter.value}` : "";
    const page = await api(`/evals/${evalId}/runs/${runId}/output_items?limit=100${status}`, { signal: context.signal });
    if (context.active) replace(itemsArea, itemsTable(page.data));
  };
  filter.addEventListener("change", () => loadItems().catch((error) => replace(itemsArea, errorBox(error))));

  const refresh = async () => {
    const run = await api(`/evals/${evalId}/runs/${runId}`, { signal: context.signal });
    if (!context.active) return false;
    replace(header,
      h("h1", {}, run.name, " ", h("code", {}, run.id), " ", h("span", { id: "oai-run-status" }, statusBadge(run.status))),
      run.error ? errorBox(run.error, "The run failed") : null,
      facts([
        ["Model", run.model],
        ["Results", countsText(run)],
        ["Usage", run.per_model_usage.map((u) => `${u.model_name}: ${u.invocation_count} calls, ${u.total_tokens} tokens`).join("; ") || "—"],
        ["Created", formatTime(run.created_at)],
      ]));
    replace(criteriaArea, table(
      [
        { label: "Testing criterion", cell: (c) => c.testing_criteria },
        { label: "Passed", cell: (c) => String(c.passed), class: "num" },
        { label: "Failed", cell: (c) => String(c.failed), class: "num" },
        { label: "Pass rate", cell: (c) => percent(c.passed, c.failed), class: "num" },
      ],
      run.per_testing_criteria_results,
      { id: "oai-criteria-table", empty: "No items graded yet." },
    ));
    await loadItems();
    return !FINAL.includes(run.status);
  };
  try {
    if (await refresh()) context.every(refresh, POLL_MS);
  } catch (error) {
    if (error.name !== "AbortError") replace(header, h("h1", {}, "Run ", h("code", {}, runId)), errorBox(error));
  }
}
