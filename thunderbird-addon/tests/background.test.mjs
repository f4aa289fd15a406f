import assert from "node:assert/strict";
import { test } from "node:test";

import { makeMessenger } from "./fake-messenger.mjs";
import { IDENTITY, makeSegcard } from "./fake-segcard.mjs";
import { LOCALE } from "./helpers.mjs";

const TOM = "john-tom-gh3f3gh3k@john.example";
const segcard = makeSegcard();
const api = makeMessenger({
  locale: LOCALE,
  host: segcard.answer,
  displayed: [{ id: 5 }],
  messages: { 5: { headers: { from: ["tom@example.org"], to: [TOM] } } },
  compose: { 9: { from: IDENTITY, to: ["tom@example.org"] } },
});
globalThis.messenger = api;
await import("../background.js");

test("the listeners are registered when the script has run", () => {
  assert.equal(api.runtime.onMessage.listeners.length, 1);
  assert.equal(api.compose.onBeforeSend.listeners.length, 1);
  assert.equal(api.messageDisplay.onMessagesDisplayed.listeners.length, 1);
});

test("popup messages are routed by type", async () => {
  const info = await api.runtime.sendMessage({ type: "compose-info", tabId: 9 });

  assert.equal(info.summary.shared, TOM);
});

test("an unknown popup message gets an error reply", async () => {
  const reply = await api.runtime.sendMessage({ type: "launch-missiles" });

  assert.equal(reply.code, "unknown_type");
});

test("a displayed message sets the button label for its tab", async () => {
  await api.messageDisplay.onMessagesDisplayed.fire({ id: 3 }, [{ id: 5 }]);
  await new Promise((resolve) => setTimeout(resolve, 10));

  const labels = api.calls.filter(([name]) => name === "messageDisplayAction.setLabel");
  assert.deepEqual(labels.at(-1)[1], { tabId: 3, label: "via Tom Smith" });
});

test("onBeforeSend answers with the shared segment address", async () => {
  const [answer] = await api.compose.onBeforeSend.fire({ id: 9 }, { from: IDENTITY, to: ["tom@example.org"] });

  assert.deepEqual(answer, { details: { from: TOM } });
});

test("Block from a popup blocks the contact and says so", async () => {
  const reply = await api.runtime.sendMessage({ type: "contact-action", action: "block", contact: "uid-bank" });

  assert.equal(reply.ok, true);
  assert.equal(segcard.contacts["uid-bank"].state, "blocked");
  assert.equal(reply.result, "Bank is blocked: mail to their address is refused.");
});

test("an action that is not one of the four is refused before segcard is asked", async () => {
  const before = api.ports.flatMap((port) => port.sent).length;

  const reply = await api.runtime.sendMessage({ type: "contact-action", action: "remove", contact: "uid-tom" });

  assert.equal(reply.code, "bad_request");
  assert.equal(api.ports.flatMap((port) => port.sent).length, before);
});

test("a contact that no longer exists gets segcard's sentence", async () => {
  const reply = await api.runtime.sendMessage({ type: "contact-action", action: "rotate", contact: "gone" });

  assert.equal(reply.ok, false);
  assert.match(reply.error, /no longer exists/);
});
