// Small DOM helpers shared by the popups (no logic of their own).

export const api = globalThis.messenger ?? globalThis.browser;

export function t(key, substitutions) {
  return api.i18n.getMessage(key, substitutions) || key;
}

/** Fill every [data-i18n] element with its message text. */
export function localize(root = document) {
  for (const element of root.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
}

export function setText(id, text) {
  const element = document.getElementById(id);
  element.textContent = text ?? "";
  element.hidden = !text;
}

export function element(tag, text, attributes = {}) {
  const made = document.createElement(tag);
  made.textContent = text ?? "";
  for (const [name, value] of Object.entries(attributes)) {
    made.setAttribute(name, value);
  }
  return made;
}

/** The tab the popup belongs to. */
export async function currentTabId() {
  const [tab] = await api.tabs.query({ active: true, currentWindow: true });
  return tab?.id;
}

/** Show a failed reply as its plain sentence. */
export function showError(reply) {
  setText("error", reply?.error || t("error_host_failed"));
}
