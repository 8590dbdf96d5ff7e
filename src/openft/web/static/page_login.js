// Login: paste an API key; it is checked with GET /v1/models and kept in this tab (or this browser, if asked).

import { api, saveKey } from "./api.js";
import { card, errorBox, h, notice, replace } from "./dom.js";

export async function loginPage(view, context) {
  const keyInput = h("input", {
    id: "api-key", type: "password", autocomplete: "off", required: true, placeholder: "sk-...", spellcheck: "false",
  });
  const remember = h("input", { id: "remember", type: "checkbox" });
  const submit = h("button", { type: "submit", id: "login-submit" }, "Log in");
  const message = h("div", { id: "login-message" }, context.message ? notice(context.message) : null);

  const form = h(
    "form",
    {
      id: "login-form",
      onsubmit: async (event) => {
        event.preventDefault();
        const key = keyInput.value.trim();
        submit.disabled = true;
        replace(message, notice("Checking the key…"));
        try {
          await api("/models", { key });
          saveKey(key, remember.checked);
          location.hash = `#${context.query.get("next") || "/files"}`;
        } catch (error) {
          replace(message, errorBox(error, "This key does not work"));
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("label", { for: "api-key" }, "API key"),
    keyInput,
    h("label", { class: "inline" }, remember, " Remember on this browser (otherwise only this tab)"),
    submit,
    message,
  );
  view.append(
    h("div", { class: "login" },
      card(
        "Log in to openft",
        h("p", {}, "Paste an API key of your organization. Create one on the server with ",
          h("code", {}, "openft keys create --org NAME"), "; the first one was printed when the server first started."),
        form,
      )),
  );
  keyInput.focus();
}
