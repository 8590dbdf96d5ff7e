// The dashboard shell: hash routes, login/logout, and a per-page context that stops polling when the user leaves.

import { forgetKey, getKey } from "./api.js";
import { errorBox, replace } from "./dom.js";
import { distillationPage, distillationsPage } from "./page_distill.js";
import { evaluationPage, evaluationsPage } from "./page_evals.js";
import { filePage, filesPage } from "./page_files.js";
import { jobPage } from "./page_job.js";
import { jobsPage } from "./page_jobs.js";
import { loginPage } from "./page_login.js";
import { modelsPage } from "./page_models.js";
import { oaiEvalPage, oaiEvalsPage, oaiRunPage } from "./page_oai_evals.js";
import { playgroundPage } from "./page_playground.js";

const view = document.getElementById("view");
const ROUTES = [
  [/^\/login$/, loginPage, "login"],
  [/^\/files$/, filesPage, "files"],
  [/^\/files\/([^/]+)$/, filePage, "files"],
  [/^\/jobs$/, jobsPage, "jobs"],
  [/^\/jobs\/([^/]+)$/, jobPage, "jobs"],
  [/^\/models$/, modelsPage, "models"],
  [/^\/playground$/, playgroundPage, "playground"],
  [/^\/evaluations$/, evaluationsPage, "evaluations"],
  [/^\/evaluations\/([^/]+)$/, evaluationPage, "evaluations"],
  [/^\/evals$/, oaiEvalsPage, "evals"],
  [/^\/evals\/([^/]+)$/, oaiEvalPage, "evals"],
  [/^\/evals\/([^/]+)\/runs\/([^/]+)$/, oaiRunPage, "evals"],
  [/^\/distillations$/, distillationsPage, "distillations"],
  [/^\/distillations\/([^/]+)$/, distillationPage, "distillations"],
];
let current = null;
let loginMessage = null;

/** "#/jobs/ftjob-1?x=y" -> {path: "/jobs/ftjob-1", query: URLSearchParams("x=y")} */
function parseHash() {
  const hash = location.hash.replace(/^#/, "") || "/files";
  const [path, query = ""] = hash.split("?");
  return { path: decodeURIComponent(path), query: new URLSearchParams(query) };
}

function matchRoute(path) {
  for (const [pattern, page, section] of ROUTES) {
    const found = path.match(pattern);
    if (found) return { page, section, params: found.slice(1) };
  }
  return null;
}

/** What a page gets: `signal` aborts when it is left; `every(fn, ms)` polls until then or until fn returns false. */
function pageContext(query) {
  const controller = new AbortController();
  return {
    signal: controller.signal,
    query,
    leave: () => controller.abort(),
    get active() {
      return !controller.signal.aborted;
    },
    every(fn, ms) {
      const tick = async () => {
        if (controller.signal.aborted) return;
        let again = true;
        try {
          again = (await fn()) !== false;
        } catch (error) {
          if (error.name !== "AbortError") console.error(error);
        }
        if (again && !controller.signal.aborted) setTimeout(tick, ms);
      };
      setTimeout(tick, ms);
    },
  };
}

function showSession(loggedIn) {
  document.getElementById("nav").hidden = !loggedIn;
  document.getElementById("session").hidden = !loggedIn;
  const key = getKey();
  document.getElementById("key-hint").textContent = key ? `key ${key.slice(0, 7)}…${key.slice(-4)}` : "";
}

async function render() {
  current?.leave();
  const { path, query } = parseHash();
  if (!getKey() && path !== "/login") {
    location.hash = `#/login?next=${encodeURIComponent(path)}`;
    return;
  }
  const route = matchRoute(path);
  if (!route) {
    location.hash = "#/files";
    return;
  }
  const { page, section, params } = route;
  showSession(Boolean(getKey()) && section !== "login");
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.section === section);
  }
  const context = pageContext(query);
  current = context;
  replace(view);
  if (section === "login") {
    context.message = loginMessage;
    loginMessage = null;
  }
  try {
    await page(view, context, ...params);
  } catch (error) {
    // Pages show their own errors next to what failed; anything else still reaches the user.
    if (error.name !== "AbortError" && context.active) view.append(errorBox(error));
  }
}

window.addEventListener("hashchange", render);
window.addEventListener("openft:unauthorized", (event) => {
  forgetKey();
  loginMessage = `Your API key was refused: ${event.detail}`;
  location.hash = `#/login?next=${encodeURIComponent(parseHash().path)}`;
});
document.getElementById("logout").addEventListener("click", () => {
  forgetKey();
  location.hash = "#/login";
});
render();
