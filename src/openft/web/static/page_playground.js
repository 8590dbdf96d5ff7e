// Playground: one prompt, two models side by side (typically the base model and its fine-tuned version).

import { api } from "./api.js";
import { card, errorBox, formatNumber, h, notice, option, replace } from "./dom.js";

function modelSelect(id, models, chosen) {
  const base = models.filter((m) => m.owned_by === "openft");
  const tuned = models.filter((m) => m.owned_by !== "openft");
  return h("select", { id },
    h("optgroup", { label: "Base models" }, base.map((m) => option(m.id, m.id, m.id === chosen))),
    tuned.length ? h("optgroup", { label: "Fine-tuned models" }, tuned.map((m) => option(m.id, m.id, m.id === chosen))) : null);
}

/** The side's default: the model asked for in the URL, else a fine-tuned model on the right and a base one on the left. */
function defaults(models, wanted) {
  const base = models.filter((m) => m.owned_by === "openft");
  const tuned = models.filter((m) => m.owned_by !== "openft").sort((a, b) => b.created - a.created);
  const right = wanted ?? tuned[0]?.id ?? base[0]?.id;
  const rightBase = right?.startsWith("ft:") ? right.split(":")[1] : null;
  const left = base.find((m) => m.id === rightBase)?.id ?? base[0]?.id;
  return [left, right];
}

function answerView(completion, seconds) {
  const choice = completion.choices?.[0] ?? {};
  const message = choice.message ?? {};
  const usage = completion.usage ?? {};
  return h("div", { class: "answer-body" },
    h("div", { class: "answer-text" }, message.content ?? ""),
    message.content?.trim() || message.tool_calls?.length
      ? null : h("p", { class: "hint" }, "The model answered with no visible text."),
    message.tool_calls?.length
      ? h("pre", { class: "tool-calls" }, JSON.stringify(message.tool_calls, null, 2)) : null,
    h("p", { class: "hint answer-meta" },
      `finish: ${choice.finish_reason ?? "—"} · prompt tokens ${formatNumber(usage.prompt_tokens)} · `,
      `completion tokens ${formatNumber(usage.completion_tokens)} · ${seconds.toFixed(2)} s`));
}

async function ask(side, model, messages, settings) {
  replace(side, notice(`Asking ${model}…`));
  const started = performance.now();
  try {
    const completion = await api("/chat/completions", {
      method: "POST",
      json: { model, messages, stream: false, ...settings },
    });
    replace(side, answerView(completion, (performance.now() - started) / 1000));
  } catch (error) {
    replace(side, errorBox(error, `${model} did not answer`));
  }
}

export async function playgroundPage(view, context) {
  view.append(h("h1", {}, "Playground"));
  let models;
  try {
    models = (await api("/models", { signal: context.signal })).data;
  } catch (error) {
    if (error.name !== "AbortError") view.append(errorBox(error));
    return;
  }
  const [left, right] = defaults(models, context.query.get("model"));
  const leftModel = modelSelect("left-model", models, left);
  const rightModel = modelSelect("right-model", models, right);
  const system = h("textarea", { id: "system-prompt", rows: 2, placeholder: "System prompt (optional)" });
  const prompt = h("textarea", { id: "user-prompt", rows: 4, required: true, placeholder: "Your message" });
  const maxTokens = h("input", { id: "max-tokens", type: "number", min: "1", value: "128" });
  const temperature = h("input", { id: "temperature", type: "number", min: "0", max: "2", step: "0.1", value: "0" });
  const send = h("button", { type: "submit", id: "send" }, "Send to both");
  const leftAnswer = h("div", { class: "answer", id: "left-answer" }, h("p", { class: "hint" }, "The answer appears here."));
  const rightAnswer = h("div", { class: "answer", id: "right-answer" }, h("p", { class: "hint" }, "The answer appears here."));

  const form = h(
    "form",
    {
      id: "playground-form",
      onsubmit: async (event) => {
        event.preventDefault();
        const messages = [];
        if (system.value.trim()) messages.push({ role: "system", content: system.value });
        messages.push({ role: "user", content: prompt.value });
        const settings = { max_tokens: Number(maxTokens.value) || 128, temperature: Number(temperature.value) };
        send.disabled = true;
        try {
          await Promise.all([
            ask(leftAnswer, leftModel.value, messages, settings),
            ask(rightAnswer, rightModel.value, messages, settings),
          ]);
        } finally {
          send.disabled = false;
        }
      },
    },
    system,
    prompt,
    h("div", { class: "row-form" },
      h("label", {}, "Max tokens", maxTokens),
      h("label", {}, "Temperature", temperature),
      send),
  );
  view.append(
    card(null, form),
    h("div", { class: "columns" },
      card(null, h("label", {}, "Left model", leftModel), leftAnswer),
      card(null, h("label", {}, "Right model", rightModel), rightAnswer)),
  );
}
