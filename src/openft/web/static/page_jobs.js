// Jobs: start a fine-tuning job and watch every job's status change live.

import { api, listAll } from "./api.js";
import { card, errorBox, formatTime, h, notice, option, replace, statusBadge, table } from "./dom.js";

export const FINAL_STATUSES = ["succeeded", "failed", "cancelled"];
const POLL_MS = 2000;

function numberOrNull(input) {
  const text = input.value.trim();
  return text === "" ? null : Number(text);
}

function modelOptions(models, chosen) {
  const base = models.filter((m) => m.owned_by === "openft");
  const tuned = models.filter((m) => m.owned_by !== "openft");
  return [
    h("optgroup", { label: "Base models" }, base.map((m) => option(m.id, m.id, m.id === chosen))),
    tuned.length ? h("optgroup", { label: "Your fine-tuned models" }, tuned.map((m) => option(m.id, m.id, m.id === chosen))) : null,
  ];
}

function createForm(models, files, query) {
  const trainable = files.filter((f) => f.purpose === "fine-tune" && f.status === "processed");
  const model = h("select", { id: "job-model", required: true }, modelOptions(models, query.get("model")));
  const trainingFile = h("select", { id: "job-training-file", required: true },
    trainable.length ? null : option("", "no validated training file yet: upload one on Files"),
    trainable.map((f) => option(f.id, `${f.filename} (${f.id})`, f.id === query.get("training_file"))));
  const validationFile = h("select", { id: "job-validation-file" }, option("", "none"),
    trainable.map((f) => option(f.id, `${f.filename} (${f.id})`)));
  const epochs = h("input", { id: "job-epochs", type: "number", min: "1", max: "50", step: "1", placeholder: "auto" });
  const batchSize = h("input", { id: "job-batch-size", type: "number", min: "1", step: "1", placeholder: "auto" });
  const lrMultiplier = h("input", { id: "job-lr", type: "number", min: "0", step: "any", placeholder: "auto" });
  const suffix = h("input", { id: "job-suffix", type: "text", maxlength: "64", placeholder: "optional, e.g. support-bot" });
  const submit = h("button", { type: "submit", id: "job-submit" }, "Start fine-tuning");
  const message = h("div", { id: "job-message" });

  return h(
    "form",
    {
      id: "job-form",
      class: "grid-form",
      onsubmit: async (event) => {
        event.preventDefault();
        const hyperparameters = {};
        for (const [name, input] of [["n_epochs", epochs], ["batch_size", batchSize], ["learning_rate_multiplier", lrMultiplier]]) {
          const value = numberOrNull(input);
          if (value !== null) hyperparameters[name] = value;
        }
        const body = {
          model: model.value,
          training_file: trainingFile.value,
          method: { type: "supervised", supervised: { hyperparameters } },
        };
        if (validationFile.value) body.validation_file = validationFile.value;
        if (suffix.value.trim()) body.suffix = suffix.value.trim();
        submit.disabled = true;
        replace(message, notice("Creating the job…"));
        try {
          const job = await api("/fine_tuning/jobs", { method: "POST", json: body });
          location.hash = `#/jobs/${job.id}`;
        } catch (error) {
          replace(message, errorBox(error, "The job was not created"));
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("label", {}, "Base model", model),
    h("label", {}, "Training file", trainingFile),
    h("label", {}, "Validation file", validationFile),
    h("label", {}, "Epochs", epochs),
    h("label", {}, "Batch size", batchSize),
    h("label", {}, "Learning-rate multiplier", lrMultiplier),
    h("label", {}, "Suffix for the model name", suffix),
    h("div", { class: "form-actions" }, submit),
    message,
  );
}

function jobsTable(jobs) {
  return table(
    [
      { label: "Job", cell: (j) => h("a", { href: `#/jobs/${j.id}` }, h("code", {}, j.id)) },
      { label: "Status", cell: (j) => statusBadge(j.status) },
      { label: "Base model", cell: (j) => j.model },
      { label: "Fine-tuned model", cell: (j) => (j.fine_tuned_model ? h("code", {}, j.fine_tuned_model) : "—") },
      { label: "Created", cell: (j) => formatTime(j.created_at) },
      { label: "Finished", cell: (j) => formatTime(j.finished_at) },
    ],
    jobs,
    { id: "jobs-table", empty: "No fine-tuning jobs yet.", rowAttrs: (j) => ({ "data-job-id": j.id }) },
  );
}

export async function jobsPage(view, context) {
  const formArea = h("div", {}, notice("Loading models and files…"));
  const listArea = h("div", {}, notice("Loading jobs…"));
  view.append(h("h1", {}, "Fine-tuning jobs"), card("New job", formArea), card("Jobs", listArea));

  Promise.all([api("/models"), listAll("/files?purpose=fine-tune")])
    .then(([models, files]) => context.active && replace(formArea, createForm(models.data, files, context.query)))
    .catch((error) => replace(formArea, errorBox(error)));

  const refresh = async () => {
    try {
      const jobs = await listAll("/fine_tuning/jobs", { maxPages: 5 });
      if (context.active) replace(listArea, jobsTable(jobs));
    } catch (error) {
      if (context.active) replace(listArea, errorBox(error));
    }
  };
  await refresh();
  context.every(refresh, POLL_MS);
}
