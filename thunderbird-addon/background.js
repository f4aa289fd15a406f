// The background of the segcard add-on: one link to segcard, one message
// router for the popups, and the listeners (registered at the top level so
// that Thunderbird finds them as soon as the script has run).

import { contactAction } from "./common/actions.js";
import { beforeSend, composeInfo } from "./common/compose.js";
import { displayInfo } from "./common/display.js";
import { createHostClient } from "./common/native.js";
import { createRouter } from "./common/router.js";

const api = globalThis.messenger ?? globalThis.browser;
const t = (key, substitutions) => api.i18n.getMessage(key, substitutions) || key;

export const host = createHostClient(api.runtime, { t });

export const route = createRouter(
  {
    "display-info": (message) => displayInfo(api, host, message.tabId, t),
    "compose-info": (message) => composeInfo(api, host, message.tabId, t),
    "contact-action": (message) => contactAction(host, message, t),
    status: () => host.request("status"),
  },
  { log: (text) => console.warn("segcard:", text) },
);

async function labelDisplayedMessage(tab) {
  const info = await displayInfo(api, host, tab.id, t);
  const label = info.ok ? info.label : t("label_unavailable");
  await api.messageDisplayAction.setLabel({ tabId: tab.id, label });
  await api.messageDisplayAction.setTitle({ tabId: tab.id, title: info.ok ? label : info.error });
}

api.runtime.onMessage.addListener((message, sender) => route(message, sender));

api.messageDisplay.onMessagesDisplayed.addListener((tab) => {
  labelDisplayedMessage(tab).catch((error) => console.warn("segcard: label:", error));
});

api.compose.onBeforeSend.addListener((tab, details) => beforeSend(api, host, details));
