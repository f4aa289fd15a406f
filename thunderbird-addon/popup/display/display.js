// The read window's popup: the contact a message came in on, and actions.

import { api, currentTabId, localize, setText, showError, t } from "../dom.js";

let info = null;

function verdictText(reply) {
  const { action, reason } = reply.verdict ?? {};
  return action ? `${action} (${reason})` : "";
}

function renderActions(reply) {
  const contact = reply.contact;
  document.getElementById("actions").hidden = !contact;
  if (!contact) {
    return;
  }
  const blocked = contact.state === "blocked";
  document.querySelector("[data-action=block]").hidden = blocked;
  document.querySelector("[data-action=unblock]").hidden = !blocked;
  const trust = document.getElementById("trust");
  const outsider = reply.sender && !(contact.emails ?? []).includes(reply.sender);
  trust.hidden = !outsider || !reply.found;
  trust.textContent = t("action_trust", [contact.name]);
}

function render(reply) {
  info = reply;
  if (!reply.ok) {
    setText("label", t("label_unavailable"));
    showError(reply);
    return;
  }
  setText("label", reply.label);
  document.getElementById("details").hidden = false;
  setText("contact", reply.contact?.name ?? "–");
  setText("address", reply.contact?.address ?? "–");
  setText("came-in-on", reply.came_in_on ?? "–");
  setText("sender", reply.sender ?? "–");
  setText("verdict", verdictText(reply) || "–");
  document.getElementById("verdict").className = `verdict-${reply.verdict?.action}`;
  setText("state", reply.contact ? t(`state_${reply.contact.state}`) : "–");
  setText("note", reply.note || (reply.contact ? "" : t("error_no_contact")));
  renderActions(reply);
}

async function load() {
  const tabId = await currentTabId();
  render(await api.runtime.sendMessage({ type: "display-info", tabId }));
}

async function act(action) {
  setText("result", "");
  setText("error", "");
  const reply = await api.runtime.sendMessage({
    type: "contact-action",
    action,
    contact: info.contact.uid,
    sender: info.sender,
  });
  if (!reply.ok) {
    showError(reply);
    return;
  }
  await load();
  setText("result", reply.result);
}

document.getElementById("actions").addEventListener("click", (event) => {
  const action = event.target.closest("button")?.dataset.action;
  if (action && info?.contact) {
    act(action).catch((error) => showError({ error: String(error) }));
  }
});

localize();
load().catch((error) => showError({ error: String(error) }));
