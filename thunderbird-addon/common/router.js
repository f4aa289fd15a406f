// The background's one message router, keyed on the `type` field.

/** A listener for runtime.onMessage that calls `handlers[message.type]`. */
export function createRouter(handlers, { log = () => {} } = {}) {
  return async function route(message, sender) {
    const type = message?.type;
    if (typeof type !== "string" || !Object.hasOwn(handlers, type)) {
      return { ok: false, code: "unknown_type", error: `unknown request type ${type}` };
    }
    try {
      return await handlers[type](message, sender);
    } catch (error) {
      log(`request ${type} failed: ${error}`);
      return { ok: false, code: "internal", error: String(error?.message ?? error) };
    }
  };
}
