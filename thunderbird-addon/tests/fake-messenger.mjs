// A hand-made fake of the parts of Thunderbird's messenger API that the
// add-on uses. Plain ES module without Node imports: the screenshot preview
// loads it in Chromium too.

export function makeEvent() {
  const listeners = [];
  return {
    listeners,
    addListener: (listener) => listeners.push(listener),
    removeListener: (listener) => listeners.splice(listeners.indexOf(listener), 1),
    hasListener: (listener) => listeners.includes(listener),
    fire: (...args) => Promise.all(listeners.map((listener) => listener(...args))),
  };
}

/** getMessage over a messages.json object, with $1..$9 substitutions. */
export function makeI18n(messages) {
  return {
    getMessage(key, substitutions = []) {
      const entry = messages[key];
      if (!entry) {
        return "";
      }
      const values = Array.isArray(substitutions) ? substitutions : [substitutions];
      return entry.message.replace(/\$(\d)/g, (_, n) => String(values[n - 1] ?? ""));
    },
  };
}

/**
 * A native port whose other end is `answer(request)`: it returns a reply,
 * null for no reply, or throws to close the port with that error.
 */
export class FakePort {
  constructor(answer, { connectError = null } = {}) {
    this.answer = answer;
    this.onMessage = makeEvent();
    this.onDisconnect = makeEvent();
    this.sent = [];
    this.error = null;
    this.connected = true;
    if (connectError) {
      // Like Firefox: the port opens, then closes with the error.
      queueMicrotask(() => this.close(new Error(connectError)));
    }
  }

  postMessage(message) {
    if (!this.connected) {
      throw new Error("Attempt to postMessage on disconnected port");
    }
    this.sent.push(message);
    queueMicrotask(() => this.reply(message));
  }

  async reply(message) {
    try {
      const reply = await this.answer(message);
      if (reply && this.connected) {
        this.onMessage.fire({ v: 1, id: message.id, ...reply });
      }
    } catch (error) {
      this.close(error);
    }
  }

  close(error) {
    this.connected = false;
    this.error = error ? { message: error.message } : null;
    queueMicrotask(() => this.onDisconnect.fire(this));
  }

  disconnect() {
    this.connected = false;
  }
}

/** The fake API; `options` holds the messages, compose windows and host. */
export function makeMessenger(options = {}) {
  const ports = [];
  const calls = [];
  const record = (name, value) => (...args) => {
    calls.push([name, ...args]);
    return Promise.resolve(value);
  };
  const messages = options.messages ?? {};
  const api = {
    calls,
    ports,
    i18n: makeI18n(options.locale ?? {}),
    runtime: {
      lastError: null,
      onMessage: makeEvent(),
      connectNative(name) {
        calls.push(["runtime.connectNative", name]);
        const port = new FakePort(options.host ?? (() => null), {
          connectError: options.connectError ?? null,
        });
        ports.push(port);
        return port;
      },
      async sendMessage(message) {
        const [listener] = api.runtime.onMessage.listeners;
        return listener ? listener(message, {}) : undefined;
      },
    },
    tabs: { query: record("tabs.query", [{ id: options.tabId ?? 1 }]) },
    messageDisplay: {
      onMessagesDisplayed: makeEvent(),
      async getDisplayedMessages(tabId) {
        calls.push(["messageDisplay.getDisplayedMessages", tabId]);
        return options.displayed ?? [];
      },
    },
    messages: {
      async get(id) {
        return messages[id]?.header;
      },
      async getFull(id) {
        if (!messages[id]) {
          throw new Error(`no message ${id}`);
        }
        return { headers: messages[id].headers, parts: [] };
      },
    },
    messageDisplayAction: {
      setLabel: record("messageDisplayAction.setLabel"),
      setTitle: record("messageDisplayAction.setTitle"),
    },
    compose: {
      onBeforeSend: makeEvent(),
      async getComposeDetails(tabId) {
        calls.push(["compose.getComposeDetails", tabId]);
        return options.compose?.[tabId] ?? {};
      },
    },
  };
  return api;
}
