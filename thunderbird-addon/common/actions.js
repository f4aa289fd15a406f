// Block, Unblock, Rotate and Trust, from either popup.

const ACTIONS = new Set(["block", "unblock", "rotate", "trust"]);

/** Run one action on a contact through segcard; the reply carries `result` text. */
export async function contactAction(host, message, t) {
  const { action, contact, sender } = message ?? {};
  if (!ACTIONS.has(action) || typeof contact !== "string" || !contact) {
    return { ok: false, code: "bad_request", error: `cannot ${action} this contact` };
  }
  const fields = action === "trust" ? { contact, sender } : { contact };
  const reply = await host.request(action, fields);
  if (!reply.ok) {
    return reply;
  }
  const second = action === "trust" ? sender : reply.contact?.address;
  return { ...reply, result: t(`result_${action}`, [reply.contact?.name ?? "", second ?? ""]) };
}
