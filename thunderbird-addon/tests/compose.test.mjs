import assert from "node:assert/strict";
import { test } from "node:test";

import { beforeSend, composeInfo, composeRecipients, summarize } from "../common/compose.js";
import { createHostClient } from "../common/native.js";
import { makeMessenger } from "./fake-messenger.mjs";
import { IDENTITY, makeSegcard } from "./fake-segcard.mjs";
import { fakeHost, t } from "./helpers.mjs";

const TOM = "john-tom-gh3f3gh3k@john.example";

function setup(details) {
  const segcard = makeSegcard();
  const api = makeMessenger({ host: segcard.answer, compose: { 7: details } });
  return { api, host: createHostClient(api.runtime, { t }), segcard };
}

test("recipients come from To, Cc and Bcc, strings or lists", () => {
  const details = { to: ["Tom <tom@example.org>"], cc: "a@x.example, B <b@y.example>", bcc: [] };

  assert.deepEqual(
    composeRecipients(details).map((m) => m.email),
    ["tom@example.org", "a@x.example", "b@y.example"],
  );
});

test("recipients on one segment share its address and are not split", () => {
  const rows = [
    { kind: "segment", from: TOM, contact: { uid: "u1" } },
    { kind: "own", from: null },
  ];

  assert.deepEqual(summarize(rows), { copies: 1, shared: TOM, split: false });
});

test("recipients on two segments split the message", () => {
  const rows = [
    { kind: "segment", from: TOM },
    { kind: "segment", from: "john-bank-k7mz2qpxa@john.example" },
  ];

  assert.deepEqual(summarize(rows), { copies: 2, shared: null, split: true });
});

test("a new contact has no address yet, so nothing is shared", () => {
  const rows = [{ kind: "new_contact", address: "new@x.example", contact: null }];

  assert.deepEqual(summarize(rows), { copies: 1, shared: null, split: false });
});

test("the popup lists what each recipient sees", async () => {
  const { api, host } = setup({ from: `John <${IDENTITY}>`, to: ["Tom <tom@example.org>", "new@x.example"] });

  const info = await composeInfo(api, host, 7, t);

  assert.equal(info.ok, true);
  assert.deepEqual(
    info.rows.map((row) => [row.address, row.kind, row.from]),
    [
      ["tom@example.org", "segment", TOM],
      ["new@x.example", "new_contact", null],
    ],
  );
  assert.equal(info.summary.split, true);
});

test("the popup warns when an identity shows in the quoted text", async () => {
  const { api, host } = setup({
    from: IDENTITY,
    to: ["tom@example.org"],
    isPlainText: true,
    plainTextBody: `ok\n\nJohn <${IDENTITY}> wrote:\n> hi\n`,
  });

  const info = await composeInfo(api, host, 7, t);

  assert.equal(info.warnings.length, 1);
  assert.match(info.warnings[0], /john@john\.example appears in the quoted text/);
});

test("before sending, an identity From becomes the one shared segment address", async () => {
  const { api, host } = setup();
  const details = { from: `John Doe <${IDENTITY}>`, to: ["Tom <tom@example.org>"] };

  const answer = await beforeSend(api, host, details);

  assert.deepEqual(answer, { details: { from: `John Doe <${TOM}>` } });
});

test("before sending, split recipients leave the From to the proxy", async () => {
  const { api, host } = setup();
  const details = { from: IDENTITY, to: ["tom@example.org", "service@bank.example"] };

  assert.deepEqual(await beforeSend(api, host, details), {});
});

test("before sending, a From that is not an identity is left alone", async () => {
  const { api, host } = setup();
  const details = { from: "Other <other@elsewhere.example>", to: ["tom@example.org"] };

  assert.deepEqual(await beforeSend(api, host, details), {});
});

test("before sending without segcard, the message goes unchanged and is not held", async () => {
  const api = makeMessenger({ connectError: "No such native application segcard" });
  const host = createHostClient(api.runtime, { t });

  assert.deepEqual(await beforeSend(api, host, { from: IDENTITY, to: ["tom@example.org"] }), {});
});

test("a reply asks for the segment of the message it answers", async () => {
  const host = fakeHost(() => ({ ok: true, recipients: [], identities: [] }));
  const api = makeMessenger({
    messages: { 42: { header: { headerMessageId: "orig@x.example" } } },
    compose: { 7: { type: "reply", relatedMessageId: 42, to: ["tom@example.org"] } },
  });

  await composeInfo(api, host, 7, t);

  assert.deepEqual(host.requests[0].references, ["<orig@x.example>"]);
});
