// The words on the message display button: which contact a message came in
// on, from the verdict segcard gives for it ("via Tom", "not from Tom").

const OLD_ADDRESS = new Set(["old address", "old address, known sender"]);
const VIA = new Set(["known sender", "mailing list", "co-recipient"]);
const DIRECT = new Set(["role address", "open identity"]);
const UNKNOWN = new Set(["no token", "unknown token", "contact removed"]);

/** The kind of label for a `message` reply from segcard. */
export function labelKind(info) {
  const reason = info?.verdict?.reason ?? "";
  if (info?.to_identity || DIRECT.has(reason)) {
    return "direct";
  }
  if (!info?.found || UNKNOWN.has(reason)) {
    return "unknown";
  }
  if (reason === "blocked") {
    return "blocked";
  }
  if (OLD_ADDRESS.has(reason)) {
    return "old";
  }
  if (info.verdict.action === "warn") {
    return "not_from";
  }
  return VIA.has(reason) ? "via" : "unknown";
}

/** The label text; `t` is i18n.getMessage. */
export function labelText(info, t) {
  const kind = labelKind(info);
  const name = info?.contact?.name || info?.contact?.address || "";
  return t(`label_${kind}`, [name]);
}
