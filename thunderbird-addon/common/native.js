// The link to segcard: one native-messaging port to `segcard native-host`,
// requests matched to their replies by id. Every request resolves with a
// reply object, never a rejection: {ok: true, ...} or {ok: false, code, error}.

export const HOST_NAME = "segcard";
export const API_VERSION = 1;
export const REQUEST_TIMEOUT_MS = 20000;

// Firefox's text when no host manifest is registered under the name.
const NOT_INSTALLED = /no such native application|not found/i;

/** Why the port failed, as an error code. */
function failureCode(error) {
  return NOT_INSTALLED.test(String(error?.message ?? "")) ? "not_installed" : "host_failed";
}

/** A failed reply made on this side of the port. */
export function errorReply(id, code, error) {
  return { v: API_VERSION, id, ok: false, code, error };
}

/**
 * A client for the host. `runtime` is the WebExtension runtime API (or a
 * fake), `t` turns a message name into text (i18n.getMessage).
 */
export function createHostClient(runtime, options = {}) {
  const name = options.name ?? HOST_NAME;
  const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
  const t = options.t ?? ((key) => key);
  const timers = options.timers ?? globalThis;
  const pending = new Map();
  let port = null;
  let nextId = 1;

  function failAll(code) {
    for (const [id, entry] of pending) {
      timers.clearTimeout(entry.timer);
      entry.resolve(errorReply(id, code, t(`error_${code}`)));
    }
    pending.clear();
  }

  function onReply(reply) {
    const entry = reply && pending.get(reply.id);
    if (!entry) {
      return;
    }
    pending.delete(reply.id);
    timers.clearTimeout(entry.timer);
    entry.resolve(reply);
  }

  function onDisconnect(closed) {
    const error = closed?.error ?? runtime.lastError;
    port = null;
    failAll(failureCode(error));
  }

  function connect() {
    port = runtime.connectNative(name);
    port.onMessage.addListener(onReply);
    port.onDisconnect.addListener(onDisconnect);
  }

  function request(type, fields = {}) {
    const id = `r${nextId++}`;
    return new Promise((resolve) => {
      const timer = timers.setTimeout(() => {
        pending.delete(id);
        resolve(errorReply(id, "timeout", t("error_timeout")));
      }, timeoutMs);
      pending.set(id, { resolve, timer });
      try {
        if (!port) {
          connect();
        }
        port.postMessage({ ...fields, v: API_VERSION, id, type });
      } catch (error) {
        port = null;
        failAll(failureCode(error));
      }
    });
  }

  function close() {
    port?.disconnect();
    port = null;
    failAll("host_failed");
  }

  return { request, close };
}
