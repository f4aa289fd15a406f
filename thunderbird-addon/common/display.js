// The read window: which contact and segment a displayed message came in on.

import { addressesIn, parseMailbox } from "./addresses.js";
import { labelText } from "./labels.js";

// Headers in which the receiving side records the envelope recipient.
const DELIVERY_HEADERS = ["delivered-to", "x-original-to", "envelope-to", "x-delivered-to"];
const MAX_ADDRESSES = 50;

function lowerKeys(headers) {
  const out = {};
  for (const [name, values] of Object.entries(headers ?? {})) {
    out[name.toLowerCase()] = Array.isArray(values) ? values : [values];
  }
  return out;
}

/** The `message` request for segcard, from a message's headers. */
export function messageRequest(rawHeaders) {
  const headers = lowerKeys(rawHeaders);
  const get = (name) => headers[name] ?? [];
  return {
    from: parseMailbox(addressesIn(get("from"))[0] ?? "").email,
    delivered_to: addressesIn(DELIVERY_HEADERS.flatMap(get)).slice(0, MAX_ADDRESSES),
    to: addressesIn([...get("to"), ...get("cc")]).slice(0, MAX_ADDRESSES),
    verdict_header: String(get("x-segcard-verdict")[0] ?? "").slice(0, 2000),
    list_id: String(get("list-id")[0] ?? "").slice(0, 500),
  };
}

/** The one message shown in a tab, or null for none or several. */
export async function displayedMessage(api, tabId) {
  const shown = await api.messageDisplay.getDisplayedMessages(tabId);
  // COMPAT TB128: Manifest V2 gets an array here, V3 a MessageList.
  const list = Array.isArray(shown) ? shown : (shown?.messages ?? []);
  return list.length === 1 ? list[0] : null;
}

/** What the display popup and button show for the message in `tabId`. */
export async function displayInfo(api, host, tabId, t) {
  const message = await displayedMessage(api, tabId);
  if (!message) {
    return { ok: false, code: "no_message", error: t("error_no_message") };
  }
  const full = await api.messages.getFull(message.id);
  const reply = await host.request("message", messageRequest(full.headers));
  if (!reply.ok) {
    return reply;
  }
  return { ...reply, label: labelText(reply, t), messageId: message.id };
}
