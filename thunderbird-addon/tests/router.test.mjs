import assert from "node:assert/strict";
import { test } from "node:test";

import { createRouter } from "../common/router.js";

test("a message goes to the handler named by its type", async () => {
  const route = createRouter({ ping: (message) => ({ ok: true, got: message.n }) });

  assert.deepEqual(await route({ type: "ping", n: 3 }), { ok: true, got: 3 });
});

test("an unknown or missing type gets an error reply", async () => {
  const route = createRouter({ ping: () => ({ ok: true }) });

  assert.equal((await route({ type: "toString" })).code, "unknown_type");
  assert.equal((await route({})).code, "unknown_type");
  assert.equal((await route(null)).code, "unknown_type");
});

test("a handler that throws gives an error reply, not a rejection", async () => {
  const logged = [];
  const route = createRouter(
    {
      boom: () => {
        throw new Error("broken");
      },
    },
    { log: (text) => logged.push(text) },
  );

  const reply = await route({ type: "boom" });

  assert.equal(reply.ok, false);
  assert.equal(reply.error, "broken");
  assert.equal(logged.length, 1);
});
