import assert from "node:assert/strict";
import { test } from "node:test";

import { createHostClient } from "../common/native.js";
import { makeMessenger } from "./fake-messenger.mjs";
import { t } from "./helpers.mjs";

test("a request carries the API version, an id and its type", async () => {
  const api = makeMessenger({ host: () => ({ ok: true, pong: true }) });
  const client = createHostClient(api.runtime, { t });

  const reply = await client.request("ping");

  assert.deepEqual(api.ports[0].sent[0], { v: 1, id: "r1", type: "ping" });
  assert.equal(reply.ok, true);
  assert.equal(reply.id, "r1");
});

test("replies that come out of order reach their own request", async () => {
  let release;
  const gate = new Promise((resolve) => (release = resolve));
  const api = makeMessenger({
    host: async (request) => {
      if (request.type === "slow") {
        await gate;
      }
      return { ok: true, echo: request.type };
    },
  });
  const client = createHostClient(api.runtime, { t });

  const first = client.request("slow");
  const second = await client.request("fast");
  release();

  assert.equal(second.echo, "fast");
  assert.equal((await first).echo, "slow");
});

test("one port serves many requests", async () => {
  const api = makeMessenger({ host: () => ({ ok: true }) });
  const client = createHostClient(api.runtime, { t });

  await client.request("ping");
  await client.request("status");

  assert.equal(api.ports.length, 1);
});

test("a missing host manifest gives the install instruction", async () => {
  const api = makeMessenger({ connectError: "No such native application segcard" });
  const client = createHostClient(api.runtime, { t });

  const reply = await client.request("ping");

  assert.equal(reply.ok, false);
  assert.equal(reply.code, "not_installed");
  assert.match(reply.error, /segcard install-thunderbird/);
});

test("a host that dies fails the waiting requests with a plain sentence", async () => {
  const api = makeMessenger({
    host: () => {
      throw new Error("An unexpected error occurred");
    },
  });
  const client = createHostClient(api.runtime, { t });

  const reply = await client.request("ping");

  assert.equal(reply.code, "host_failed");
  assert.match(reply.error, /segcard native-host/);
});

test("after the port closed, the next request opens a new one", async () => {
  let calls = 0;
  const api = makeMessenger({
    host: () => {
      calls += 1;
      if (calls === 1) {
        throw new Error("An unexpected error occurred");
      }
      return { ok: true };
    },
  });
  const client = createHostClient(api.runtime, { t });

  await client.request("ping");
  const reply = await client.request("ping");

  assert.equal(reply.ok, true);
  assert.equal(api.ports.length, 2);
});

test("a request with no answer times out with what to do", async () => {
  const api = makeMessenger({ host: () => null });
  const timers = {
    setTimeout: (fn) => {
      queueMicrotask(fn);
      return 1;
    },
    clearTimeout: () => {},
  };
  const client = createHostClient(api.runtime, { t, timers });

  const reply = await client.request("ping");

  assert.equal(reply.code, "timeout");
  assert.match(reply.error, /segcard serve/);
});

test("fields cannot override the version, id or type", async () => {
  const api = makeMessenger({ host: () => ({ ok: true }) });
  const client = createHostClient(api.runtime, { t });

  await client.request("ping", { v: 9, id: "x", type: "evil" });

  assert.deepEqual(api.ports[0].sent[0], { v: 1, id: "r1", type: "ping" });
});
