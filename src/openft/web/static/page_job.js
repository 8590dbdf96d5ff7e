// One job: live status, progress, loss/accuracy charts from the metrics events, checkpoints, events, and controls.

import { api } from "./api.js";
import { lineChart } from "./chart.js";
import { card, errorBox, facts, formatNumber, formatTime, h, notice, replace, statusBadge, table } from "./dom.js";
import { FINAL_STATUSES } from "./page_jobs.js";

const POLL_MS = 2000;
const EVENTS_PAGE = 100;
const TRAIN_COLOR = "#2563eb";
const VALID_COLOR = "#ea580c";

/**
 * Events newest first, fetched incrementally: page back from the newest until an event we already have.
 * `known` is the list held so far (newest first); returns the new full list.
 */
async function updateEvents(jobId, known, signal) {
  const seen = new Set(known.map((e) => e.id));
  const fresh = [];
  let after = null;
  for (let page = 0; page < 200; page++) {
    const cursor = after ? `&after=${encodeURIComponent(after)}` : "";
    const result = await api(`/fine_tuning/jobs/${jobId}/events?limit=${EVENTS_PAGE}${cursor}`, { signal });
    const unseen = result.data.filter((e) => !seen.has(e.id));
    fresh.push(...unseen);
    if (unseen.length < result.data.length || !result.has_more || result.data.length === 0) break;
    after = result.data[result.data.length - 1].id;
  }
  return [...fresh, ...known];
}

/** Chart series from metrics events; the last report for a step wins (a resumed job may repeat a step). */
export function metricSeries(events, pairs) {
  const byStep = new Map();
  for (const event of [...events].reverse()) {
    if (event.type === "metrics" && event.data && typeof event.data.step === "number") {
      byStep.set(event.data.step, { ...byStep.get(event.data.step), ...event.data });
    }
  }
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  return pairs.map(([name, key, color]) => ({
    name,
    color,
    points: steps.filter((step) => typeof byStep.get(step)[key] === "number").map((step) => ({ x: step, y: byStep.get(step)[key] })),
  }));
}

function latestProgress(events) {
  const latest = events.find((e) => e.type === "metrics" && e.data && e.data.total_steps);
  return latest ? { step: latest.data.step, total: latest.data.total_steps } : null;
}

function progressBar(job, events) {
  const progress = latestProgress(events);
  if (!progress) return job.status === "running" ? notice("Preparing the model and data…") : null;
  const done = job.status === "succeeded" ? progress.total : progress.step;
  const percent = Math.min(100, Math.round((100 * done) / progress.total));
  return h("div", { class: "progress", id: "job-progress" },
    h("div", { class: "progress-bar", style: `width: ${percent}%` }),
    h("span", {}, `step ${done} of ${progress.total} (${percent}%)`));
}

function jobFacts(job) {
  const hp = job.method?.[job.method.type]?.hyperparameters ?? job.hyperparameters;
  const hpText = Object.entries(hp).map(([k, v]) => `${k} ${formatNumber(v)}`).join(" · ");
  return facts([
    ["Base model", job.model],
    ["Fine-tuned model", job.fine_tuned_model
      ? h("span", {}, h("code", {}, job.fine_tuned_model), " ",
        h("a", { href: `#/playground?model=${encodeURIComponent(job.fine_tuned_model)}` }, "try it in the playground"))
      : null],
    ["Training file", h("a", { href: `#/files/${job.training_file}` }, job.training_file)],
    ["Validation file", job.validation_file ? h("a", { href: `#/files/${job.validation_file}` }, job.validation_file) : null],
    ["Method", job.method?.type],
    ["Hyperparameters", hpText],
    ["Trained tokens", job.trained_tokens ? formatNumber(job.trained_tokens) : null],
    ["Suffix", job.user_provided_suffix],
    ["Created", formatTime(job.created_at)],
    ["Estimated finish", job.estimated_finish ? formatTime(job.estimated_finish) : null],
    ["Finished", job.finished_at ? formatTime(job.finished_at) : null],
  ], "job-facts");
}

function controls(job, act) {
  const active = !FINAL_STATUSES.includes(job.status);
  return h("div", { class: "controls" },
    h("button", { type: "button", id: "job-pause", class: "secondary", disabled: !["running", "queued"].includes(job.status),
      onclick: () => act("pause") }, "Pause"),
    h("button", { type: "button", id: "job-resume", class: "secondary", disabled: job.status !== "paused",
      onclick: () => act("resume") }, "Resume"),
    h("button", { type: "button", id: "job-cancel", class: "danger", disabled: !active,
      onclick: () => act("cancel") }, "Cancel job"));
}

function checkpointsTable(checkpoints) {
  return table(
    [
      { label: "Step", cell: (c) => String(c.step_number), class: "num" },
      { label: "Model", cell: (c) => h("code", {}, c.fine_tuned_model_checkpoint) },
      { label: "Training loss", cell: (c) => formatNumber(c.metrics?.train_loss), class: "num" },
      { label: "Validation loss", cell: (c) => formatNumber(c.metrics?.valid_loss), class: "num" },
      { label: "Saved", cell: (c) => formatTime(c.created_at) },
    ],
    checkpoints,
    { id: "checkpoints-table", empty: "No checkpoints yet: one is saved at the end of each epoch." },
  );
}

function eventsTable(events) {
  return table(
    [
      { label: "Time", cell: (e) => formatTime(e.created_at) },
      { label: "Level", cell: (e) => h("span", { class: `level-${e.level}` }, e.level) },
      { label: "Message", cell: (e) => e.message, class: "details" },
    ],
    events,
    { id: "events-table", empty: "No events yet." },
  );
}

export async function jobPage(view, context, jobId) {
  const parts = {
    header: h("div"),
    message: h("div", { id: "action-message" }),
    progress: h("div"),
    error: h("div"),
    facts: h("div"),
    charts: h("div", { class: "charts" }),
    checkpoints: h("div"),
    events: h("div"),
  };
  view.append(
    h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")),
    parts.header, parts.message, parts.progress, parts.error,
    h("div", { class: "columns" },
      card("Training curves", parts.charts),
      card("Details", parts.facts)),
    card("Checkpoints", parts.checkpoints),
    card("Events (newest first)", parts.events),
  );
  replace(parts.header, h("h1", {}, "Job ", h("code", {}, jobId)), notice("Loading…"));

  let events = [];
  let job = null;

  const act = async (action) => {
    try {
      job = await api(`/fine_tuning/jobs/${jobId}/${action}`, { method: "POST" });
      replace(parts.message, notice(`Requested: ${action}.`));
      draw();
    } catch (error) {
      replace(parts.message, errorBox(error, `Could not ${action} the job`));
    }
  };

  const draw = () => {
    replace(parts.header,
      h("h1", {}, "Job ", h("code", {}, job.id), " ", h("span", { id: "job-status" }, statusBadge(job.status))),
      controls(job, act));
    replace(parts.progress, progressBar(job, events));
    replace(parts.error, job.error && job.error.message ? errorBox(job.error, "The job failed") : null);
    replace(parts.facts, jobFacts(job));
    replace(parts.charts,
      lineChart({ id: "loss-chart", title: "Loss", yLabel: "loss", series: metricSeries(events, [
        ["training loss", "train_loss", TRAIN_COLOR], ["validation loss", "valid_loss", VALID_COLOR]]) }),
      lineChart({ id: "accuracy-chart", title: "Mean token accuracy", yLabel: "accuracy", series: metricSeries(events, [
        ["training accuracy", "train_mean_token_accuracy", TRAIN_COLOR],
        ["validation accuracy", "valid_mean_token_accuracy", VALID_COLOR]]) }));
    replace(parts.events, eventsTable(events));
  };

  const refresh = async () => {
    const [latestJob, latestEvents, checkpoints] = await Promise.all([
      api(`/fine_tuning/jobs/${jobId}`, { signal: context.signal }),
      updateEvents(jobId, events, context.signal),
      api(`/fine_tuning/jobs/${jobId}/checkpoints?limit=100`, { signal: context.signal }),
    ]);
    if (!context.active) return false;
    [job, events] = [latestJob, latestEvents];
    draw();
    replace(parts.checkpoints, checkpointsTable(checkpoints.data));
    return !FINAL_STATUSES.includes(job.status); // keep polling until the job is over
  };

  try {
    if (await refresh()) context.every(refresh, POLL_MS);
  } catch (error) {
    if (error.name !== "AbortError") replace(parts.header, h("h1", {}, "Job ", h("code", {}, jobId)), errorBox(error));
  }
}
