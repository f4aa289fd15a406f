// A fake of segcard's control API answers, for the add-on tests and the
// screenshot preview. It knows a few contacts and keeps their state.

export const IDENTITY = "john@john.example";

export function makeSegcard() {
  const contacts = {
    "uid-tom": {
      uid: "uid-tom",
      name: "Tom Smith",
      emails: ["tom@example.org"],
      address: "john-tom-gh3f3gh3k@john.example",
      state: "active",
    },
    "uid-bank": {
      uid: "uid-bank",
      name: "Bank",
      emails: ["service@bank.example"],
      address: "john-bank-k7mz2qpxa@john.example",
      state: "active",
    },
  };
  const byEmail = (email) => Object.values(contacts).find((c) => c.emails.includes(email));

  function recipients(request) {
    const rows = request.addresses.map((address) => {
      if (address === IDENTITY) {
        return { address, kind: "own", contact: null, from: null };
      }
      const contact = byEmail(address);
      return contact
        ? { address, kind: "segment", contact, from: contact.address }
        : { address, kind: "new_contact", contact: null, from: null };
    });
    const fromKind = request.from === IDENTITY ? "identity" : "other";
    return { ok: true, recipients: rows, identities: [IDENTITY], from_kind: fromKind };
  }

  function change(request, state) {
    const contact = contacts[request.contact];
    if (!contact) {
      return { ok: false, code: "not_found", error: "That contact no longer exists." };
    }
    if (state) {
      contact.state = state;
    } else {
      contact.address = contact.address.replace(/-\w+@/, "-n3wt0k3nx@");
    }
    return { ok: true, contact };
  }

  // A small judge: enough to show each kind of label.
  function message(request) {
    const candidates = [...request.delivered_to, ...request.to];
    const contact = Object.values(contacts).find((c) => candidates.includes(c.address));
    if (!contact) {
      const verdict = { action: "junk", reason: "unknown token" };
      return { ok: true, found: false, contact: null, verdict, sender: request.from };
    }
    const base = { ok: true, found: true, contact, came_in_on: contact.address };
    if (contact.state === "blocked") {
      return { ...base, verdict: { action: "reject", reason: "blocked" }, sender: request.from };
    }
    if (contact.emails.includes(request.from)) {
      return { ...base, verdict: { action: "deliver", reason: "known sender" }, sender: request.from };
    }
    const note = `${contact.name}'s address was used by ${request.from}`;
    const verdict = { action: "warn", reason: "unknown sender" };
    return { ...base, verdict, note, sender: request.from };
  }

  const handlers = {
    ping: () => ({ ok: true, api: 1 }),
    identities: () => ({ ok: true, identities: [IDENTITY] }),
    recipients,
    block: (request) => change(request, "blocked"),
    unblock: (request) => change(request, "active"),
    rotate: (request) => change(request, null),
    trust: (request) => ({ ok: true, contact: contacts[request.contact] }),
    message,
  };
  return {
    contacts,
    answer: (request) =>
      handlers[request.type]?.(request) ?? {
        ok: false,
        code: "unknown_type",
        error: `unknown request type ${request.type}`,
      },
  };
}
