// The compose window's popup: the address each recipient will see.

import { api, currentTabId, element, localize, setText, showError, t } from "../dom.js";

const ROW_TEXT = {
  new_contact: "compose_new_contact",
  new_segment: "compose_new_address",
  own: "compose_own",
};

function seenAs(row) {
  if (row.kind === "segment") {
    const blocked = row.contact?.state === "blocked" ? ` ${t("compose_blocked")}` : "";
    return row.from + blocked;
  }
  return t(ROW_TEXT[row.kind] ?? "compose_new_contact");
}

function actionButtons(row) {
  const cell = element("div", "", { class: "actions" });
  if (row.kind !== "segment" || !row.contact) {
    return cell;
  }
  const blocked = row.contact.state === "blocked";
  for (const action of [blocked ? "unblock" : "block", "rotate"]) {
    cell.append(
      element("button", t(`action_${action}`), {
        type: "button",
        "data-action": action,
        "data-contact": row.contact.uid,
      }),
    );
  }
  return cell;
}

function renderRows(rows) {
  const body = document.querySelector("#recipients tbody");
  body.replaceChildren();
  for (const row of rows) {
    const line = element("tr");
    const who = element("td", row.contact?.name ?? row.address);
    if (row.contact?.name) {
      who.append(element("div", row.address, { class: "sub" }));
    }
    line.append(who);
    const seen = element("td", seenAs(row), { class: row.kind === "segment" ? "address" : "" });
    seen.append(actionButtons(row));
    line.append(seen);
    body.append(line);
  }
  document.getElementById("recipients").hidden = rows.length === 0;
}

function summaryText(info) {
  if (info.rows.length === 0) {
    return t("compose_no_recipients");
  }
  if (info.summary.split) {
    return t("compose_split", [String(info.summary.copies)]);
  }
  return info.summary.shared ? t("compose_shared", [info.summary.shared]) : "";
}

function render(info) {
  document.getElementById("loading").hidden = true;
  if (!info.ok) {
    showError(info);
    return;
  }
  renderRows(info.rows);
  setText("summary", summaryText(info));
  const warnings = document.getElementById("warnings");
  warnings.replaceChildren(...info.warnings.map((text) => element("p", text, { class: "warning" })));
}

async function load() {
  const tabId = await currentTabId();
  render(await api.runtime.sendMessage({ type: "compose-info", tabId }));
}

async function act(action, contact) {
  setText("result", "");
  setText("error", "");
  const reply = await api.runtime.sendMessage({ type: "contact-action", action, contact });
  if (!reply.ok) {
    showError(reply);
    return;
  }
  await load();
  setText("result", reply.result);
}

document.getElementById("recipients").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) {
    act(button.dataset.action, button.dataset.contact).catch((error) =>
      showError({ error: String(error) }),
    );
  }
});

localize();
load().catch((error) => showError({ error: String(error) }));
