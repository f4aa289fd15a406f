// Mailbox strings as the compose and messages APIs give them.

/** {name, email} of one mailbox: "Tom <tom@example.org>" or "tom@example.org". */
export function parseMailbox(text) {
  const value = String(text ?? "").trim();
  const angle = value.match(/^(.*)<([^<>]*)>\s*$/);
  if (angle) {
    return { name: unquote(angle[1].trim()), email: angle[2].trim().toLowerCase() };
  }
  return { name: "", email: value.toLowerCase() };
}

function unquote(name) {
  const quoted = name.match(/^"(.*)"$/);
  return quoted ? quoted[1].replace(/\\(.)/g, "$1") : name;
}

/** "Name <email>", quoting the name when it holds special characters. */
export function formatMailbox(name, email) {
  if (!name) {
    return email;
  }
  const safe = /^[\w !#$%&'*+\-/=?^`{|}~.]*$/.test(name);
  const shown = safe ? name : `"${name.replace(/(["\\])/g, "\\$1")}"`;
  return `${shown} <${email}>`;
}

/** Every address in a list of header values, each possibly "a, b". */
export function addressesIn(values) {
  const found = [];
  for (const value of values ?? []) {
    for (const part of splitMailboxes(String(value))) {
      const { email } = parseMailbox(part);
      if (email.includes("@")) {
        found.push(email);
      }
    }
  }
  return found;
}

/** Split a header value at commas that are outside quotes and angle brackets. */
export function splitMailboxes(value) {
  const parts = [];
  let current = "";
  let quoted = false;
  let angle = false;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (ch === "\\" && quoted) {
      current += ch + (value[++i] ?? "");
      continue;
    }
    if (ch === '"') {
      quoted = !quoted;
    } else if (!quoted && (ch === "<" || ch === ">")) {
      angle = ch === "<";
    } else if (ch === "," && !quoted && !angle) {
      parts.push(current.trim());
      current = "";
      continue;
    }
    current += ch;
  }
  parts.push(current.trim());
  return parts.filter(Boolean);
}
