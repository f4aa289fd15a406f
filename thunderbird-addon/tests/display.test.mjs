import assert from "node:assert/strict";
import { test } from "node:test";

import { displayInfo, messageRequest } from "../common/display.js";
import { createHostClient } from "../common/native.js";
import { makeMessenger } from "./fake-messenger.mjs";
import { makeSegcard } from "./fake-segcard.mjs";
import { fakeHost, t } from "./helpers.mjs";

const TOM = "john-tom-gh3f3gh3k@john.example";

function headers(from, extra = {}) {
  return { from: [from], to: [`John <${TOM}>`], ...extra };
}

test("the request names the delivery addresses, the sender and the verdict header", () => {
  const request = messageRequest({
    From: ["Tom <Tom@Example.org>"],
    "Delivered-To": [TOM],
    "X-Original-To": ["other@john.example"],
    To: ["a@x.example, B <b@x.example>"],
    Cc: ["c@x.example"],
    "X-Segcard-Verdict": ['deliver; reason="known sender"'],
    "List-Id": ["<list.example.org>"],
  });

  assert.deepEqual(request, {
    from: "tom@example.org",
    delivered_to: [TOM, "other@john.example"],
    to: ["a@x.example", "b@x.example", "c@x.example"],
    verdict_header: 'deliver; reason="known sender"',
    list_id: "<list.example.org>",
  });
});

test("a message from its contact is labelled 'via' that contact", async () => {
  const api = makeMessenger({
    host: makeSegcard().answer,
    displayed: [{ id: 5 }],
    messages: { 5: { headers: headers("Tom <tom@example.org>") } },
  });
  const host = createHostClient(api.runtime, { t });

  const info = await displayInfo(api, host, 1, t);

  assert.equal(info.label, "via Tom Smith");
  assert.equal(info.contact.uid, "uid-tom");
});

test("a stranger on a contact's address is labelled 'not from' that contact", async () => {
  const api = makeMessenger({
    host: makeSegcard().answer,
    displayed: [{ id: 5 }],
    messages: { 5: { headers: headers("spam@bulk.example") } },
  });
  const host = createHostClient(api.runtime, { t });

  const info = await displayInfo(api, host, 1, t);

  assert.equal(info.label, "not from Tom Smith");
});

test("with several messages selected, the popup asks for one", async () => {
  const host = fakeHost(() => assert.fail("segcard must not be asked"));
  const api = makeMessenger({ displayed: [{ id: 1 }, { id: 2 }] });

  const info = await displayInfo(api, host, 1, t);

  assert.equal(info.code, "no_message");
  assert.match(info.error, /single message/);
});

test("a Manifest V3 message list is read too", async () => {
  const host = fakeHost(() => ({ ok: true, found: false, verdict: { reason: "no token" } }));
  const api = makeMessenger({
    displayed: { messages: [{ id: 5 }] },
    messages: { 5: { headers: headers("x@y.example") } },
  });

  const info = await displayInfo(api, host, 1, t);

  assert.equal(info.label, "unknown address");
});

test("segcard's error reply reaches the popup as it is", async () => {
  const error = "segcard is not running: start it with segcard serve";
  const host = fakeHost(() => ({ ok: false, code: "not_running", error }));
  const api = makeMessenger({ displayed: [{ id: 5 }], messages: { 5: { headers: headers("x@y.example") } } });

  const info = await displayInfo(api, host, 1, t);

  assert.equal(info.error, error);
});
