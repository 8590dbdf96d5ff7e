// Models: the server's base models and this organization's fine-tuned models (which can be deleted).

import { api } from "./api.js";
import { card, confirmButton, errorBox, formatTime, h, notice, replace, table } from "./dom.js";

function modelsTable(models, onDelete) {
  return table(
    [
      { label: "Model", cell: (m) => h("code", {}, m.id) },
      { label: "Kind", cell: (m) => (m.owned_by === "openft" ? "base" : "fine-tuned") },
      { label: "Owner", cell: (m) => m.owned_by },
      { label: "Created", cell: (m) => formatTime(m.created) },
      {
        label: "",
        cell: (m) => h("span", { class: "actions" },
          h("a", { href: `#/playground?model=${encodeURIComponent(m.id)}` }, "Playground"),
          m.owned_by === "openft" ? null
            : confirmButton("Delete", "Really delete?", () => onDelete(m.id), { class: "danger small", "data-delete": m.id })),
      },
    ],
    models,
    { id: "models-table", empty: "No models.", rowAttrs: (m) => ({ "data-model-id": m.id }) },
  );
}

export async function modelsPage(view, context) {
  const message = h("div", { id: "models-message" });
  const listArea = h("div", {}, notice("Loading models…"));
  view.append(h("h1", {}, "Models"), message, card(null, listArea));

  const onDelete = async (modelId) => {
    try {
      await api(`/models/${encodeURIComponent(modelId)}`, { method: "DELETE" });
      await load(); // the list first, so the notice never sits above a row that is already gone
      replace(message, notice(`Deleted ${modelId} and its checkpoints.`));
    } catch (error) {
      replace(message, errorBox(error, `Could not delete ${modelId}`));
      await load();
    }
  };
  const load = async () => {
    try {
      const models = await api("/models", { signal: context.signal });
      if (context.active) replace(listArea, modelsTable(models.data, onDelete));
    } catch (error) {
      if (error.name !== "AbortError") replace(listArea, errorBox(error));
    }
  };
  await load();
}
