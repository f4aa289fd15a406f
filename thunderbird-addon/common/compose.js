// The compose window: the address each recipient will see, and the From
// set to the one segment address when every recipient shares it.

import { formatMailbox, parseMailbox, splitMailboxes } from "./addresses.js";
import { findIdentities } from "./quoted.js";

const NEW_KINDS = new Set(["new_contact", "new_segment"]);

/** The recipients of a compose window as {name, email}, To then Cc then Bcc. */
export function composeRecipients(details) {
  const values = [details?.to, details?.cc, details?.bcc].flatMap((v) =>
    v == null ? [] : Array.isArray(v) ? v : [v],
  );
  // TODO: recipients given as address book ids (objects, not strings) are
  // skipped; resolving them needs the addressBooks permission.
  return values
    .filter((value) => typeof value === "string")
    .flatMap((value) => splitMailboxes(value))
    .map(parseMailbox)
    .filter((mailbox) => mailbox.email.includes("@"));
}

/**
 * How a message to these recipients goes out: the number of copies, the
 * one segment address they share (or null), and whether it is split.
 */
export function summarize(rows) {
  const segments = new Set();
  const fresh = new Set();
  for (const row of rows ?? []) {
    if (row.kind === "segment") {
      segments.add(row.from);
    } else if (NEW_KINDS.has(row.kind)) {
      fresh.add(row.contact?.uid ?? row.address);
    }
  }
  const copies = segments.size + fresh.size;
  const shared = fresh.size === 0 && segments.size === 1 ? [...segments][0] : null;
  return { copies, shared, split: copies > 1 };
}

/** Message-IDs of the message being replied to, so its segment is kept. */
export async function replyReferences(api, details) {
  if (details?.type !== "reply" || details.relatedMessageId == null) {
    return [];
  }
  try {
    const original = await api.messages.get(details.relatedMessageId);
    return original?.headerMessageId ? [`<${original.headerMessageId}>`] : [];
  } catch {
    return [];
  }
}

async function recipientsReply(api, host, details) {
  const mailboxes = composeRecipients(details);
  return host.request("recipients", {
    addresses: mailboxes.map((mailbox) => mailbox.email),
    references: await replyReferences(api, details),
    from: parseMailbox(details?.from ?? "").email,
  });
}

function bodyOf(details) {
  return details?.isPlainText ? details.plainTextBody : details?.body;
}

/** What the compose popup shows for the compose window in `tabId`. */
export async function composeInfo(api, host, tabId, t) {
  const details = await api.compose.getComposeDetails(tabId);
  const reply = await recipientsReply(api, host, details);
  if (!reply.ok) {
    return reply;
  }
  const found = findIdentities(bodyOf(details), reply.identities, {
    plainText: Boolean(details.isPlainText),
  });
  const warnings = found.map((hit) =>
    t(hit.quoted ? "compose_quoted" : "compose_in_text", [hit.address]),
  );
  return { ok: true, rows: reply.recipients, summary: summarize(reply.recipients), warnings };
}

/**
 * The onBeforeSend answer: {details: {from}} when every recipient shares
 * one segment and the From is one of the user's identities, else {}.
 * Never cancels: when segcard cannot be asked, its proxy still rewrites.
 */
export async function beforeSend(api, host, details) {
  if (composeRecipients(details).length === 0) {
    return {};
  }
  const reply = await recipientsReply(api, host, details);
  if (!reply.ok || reply.from_kind !== "identity") {
    return {};
  }
  const { shared } = summarize(reply.recipients);
  if (!shared) {
    return {};
  }
  const from = parseMailbox(details.from);
  return { details: { from: formatMailbox(from.name, shared) } };
}
