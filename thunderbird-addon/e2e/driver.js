// TEST ONLY: lets tests/control/test_thunderbird_e2e.py drive Thunderbird.
// `segcard install-thunderbird` leaves this folder and its manifest entry
// out of the .xpi. It connects to the native host "segcard_e2e", which only
// the test registers; without it the port closes and nothing else happens.

import { host, route } from "../background.js";

const api = globalThis.messenger ?? globalThis.browser;

const COMMANDS = {
  async compose({ to, subject, body }) {
    const tab = await api.compose.beginNew(undefined, {
      to,
      subject,
      plainTextBody: body,
      isPlainText: true,
    });
    return { tabId: tab.id };
  },
  details: ({ tabId }) => api.compose.getComposeDetails(tabId),
  route: ({ message }) => route(message),
  host: ({ request }) => host.request(request.type, request),
  send: ({ tabId }) => api.compose.sendMessage(tabId, { mode: "sendNow" }),
  async display({ raw }) {
    const file = new File([raw], "message.eml", { type: "message/rfc822" });
    const tab = await api.messageDisplay.open({ file, location: "tab" });
    return { tabId: tab.id };
  },
  label: ({ tabId }) => api.messageDisplayAction.getLabel({ tabId }),
};

const port = api.runtime.connectNative("segcard_e2e");
port.onMessage.addListener(async (command) => {
  try {
    const result = await COMMANDS[command.cmd](command);
    port.postMessage({ id: command.id, ok: true, result });
  } catch (error) {
    port.postMessage({ id: command.id, ok: false, error: String(error?.message ?? error) });
  }
});
port.postMessage({ id: 0, ok: true, result: "ready" });
