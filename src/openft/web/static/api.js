// The /v1 API from the browser: the stored key, fetch with Bearer auth, and OpenAI error envelopes as exceptions.

const KEY_NAME = "openft.apiKey";
// The page lives at <origin>/ui/; resolving "../v1" keeps working behind a proxy that adds a path prefix.
export const API_BASE = new URL("../v1", document.baseURI).href;

export class ApiError extends Error {
  constructor(status, message, { param = null, code = null, type = null } = {}) {
    super(message);
    this.status = status;
    this.param = param;
    this.code = code;
    this.type = type;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_NAME) || localStorage.getItem(KEY_NAME);
}

export function saveKey(key, remember) {
  forgetKey();
  (remember ? localStorage : sessionStorage).setItem(KEY_NAME, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_NAME);
  localStorage.removeItem(KEY_NAME);
}

async function errorFrom(response) {
  const text = await response.text();
  try {
    const error = JSON.parse(text).error;
    if (error && typeof error.message === "string") {
      return new ApiError(response.status, error.message, error);
    }
  } catch {
    // not JSON: fall through and show what the server sent
  }
  const detail = text.trim().slice(0, 300);
  return new ApiError(response.status, `HTTP ${response.status} ${response.statusText}${detail ? `: ${detail}` : ""}`);
}

/**
 * Call the API. `json` sends a JSON body, `body` anything fetch accepts (FormData for uploads).
 * Returns parsed JSON, or the Response itself with `raw: true`. Throws ApiError with the server's message.
 * A 401 with the stored key means it was revoked: listeners of "openft:unauthorized" send the user to log in.
 */
export async function api(path, { method = "GET", json, body, key, raw = false, signal } = {}) {
  const usedKey = key ?? getKey();
  const headers = { Authorization: `Bearer ${usedKey ?? ""}` };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(API_BASE + path, { method, headers, body, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, `Could not reach the openft server at ${API_BASE}: ${error.message}`);
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401 && key === undefined) {
      window.dispatchEvent(new CustomEvent("openft:unauthorized", { detail: error.message }));
    }
    throw error;
  }
  return raw ? response : response.json();
}

/** Every item of a list endpoint that pages with `after` (files, jobs, evaluations). */
export async function listAll(path, { limit = 100, maxPages = 20 } = {}) {
  const items = [];
  let after = null;
  for (let page = 0; page < maxPages; page++) {
    const separator = path.includes("?") ? "&" : "?";
    const cursor = after ? `&after=${encodeURIComponent(after)}` : "";
    const result = await api(`${path}${separator}limit=${limit}${cursor}`);
    items.push(...result.data);
    if (!result.has_more || result.data.length === 0) break;
    after = result.data[result.data.length - 1].id;
  }
  return items;
}
