// Does one of the user's real addresses show in a message being written?
// Mostly it hides in the quoted text of a reply ("John <john@...> wrote:").

/** The quoted part of a plain-text body: ">" lines and the line that introduces them. */
export function quotedPlain(body) {
  const lines = String(body ?? "").split(/\r?\n/);
  const quoted = [];
  lines.forEach((line, i) => {
    const isQuote = line.trimStart().startsWith(">");
    const introduces = !isQuote && lines[i + 1]?.trimStart().startsWith(">");
    if (isQuote || introduces) {
      quoted.push(line);
    }
  });
  return quoted.join("\n");
}

/** The quoted part of an HTML body: blockquotes and Thunderbird's cite prefix. */
export function quotedHtml(body) {
  const html = String(body ?? "");
  const parts = [];
  const first = html.search(/<blockquote\b/i);
  const last = html.toLowerCase().lastIndexOf("</blockquote>");
  if (first >= 0) {
    parts.push(html.slice(first, last > first ? last : html.length));
  }
  for (const match of html.matchAll(/<div[^>]*moz-cite-prefix[^>]*>([\s\S]*?)<\/div>/gi)) {
    parts.push(match[1]);
  }
  return parts.join("\n");
}

/**
 * The identities that appear in `body`, each with `quoted` telling whether
 * it shows in the quoted text (else elsewhere in the message).
 */
export function findIdentities(body, identities, { plainText = false } = {}) {
  const text = String(body ?? "").toLowerCase();
  const quoted = (plainText ? quotedPlain(body) : quotedHtml(body)).toLowerCase();
  const found = [];
  for (const identity of identities ?? []) {
    const address = String(identity).toLowerCase();
    if (!address.includes("@") || !text.includes(address)) {
      continue;
    }
    found.push({ address, quoted: quoted.includes(address) });
  }
  return found;
}
