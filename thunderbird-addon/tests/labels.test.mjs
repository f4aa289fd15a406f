import assert from "node:assert/strict";
import { test } from "node:test";

import { labelKind, labelText } from "../common/labels.js";
import { t } from "./helpers.mjs";

const TOM = { uid: "u1", name: "Tom", address: "john-tom-abcdefghj@john.example" };

function info(action, reason, extra = {}) {
  return { ok: true, found: true, contact: TOM, verdict: { action, reason }, ...extra };
}

test("a known sender on its contact's address reads 'via Tom'", () => {
  assert.equal(labelText(info("deliver", "known sender"), t), "via Tom");
});

test("someone else on a contact's address reads 'not from Tom'", () => {
  assert.equal(labelText(info("warn", "unknown sender"), t), "not from Tom");
});

test("a retired address reads 'old address of Tom'", () => {
  for (const reason of ["old address", "old address, known sender"]) {
    assert.equal(labelText(info("deliver", reason), t), "old address of Tom");
  }
});

test("an address segcard never gave out reads 'unknown address'", () => {
  const unknown = { ok: true, found: false, contact: null, verdict: { action: "junk", reason: "unknown token" } };

  assert.equal(labelText(unknown, t), "unknown address");
});

test("a blocked contact's address says so", () => {
  assert.equal(labelText(info("reject", "blocked"), t), "blocked: Tom");
});

test("mail to one of the user's own addresses is not blamed on anyone", () => {
  const direct = { ok: true, found: false, to_identity: true, verdict: { action: "junk", reason: "no token" } };

  assert.equal(labelKind(direct), "direct");
  assert.equal(labelText(direct, t), "to your own address");
});

test("a mailing list and a thread co-recipient read 'via' their contact", () => {
  assert.equal(labelKind(info("deliver", "mailing list")), "via");
  assert.equal(labelKind(info("deliver", "co-recipient")), "via");
});

test("a verdict reason the add-on does not know is not shown as 'via'", () => {
  assert.equal(labelKind(info("deliver", "something new")), "unknown");
});
