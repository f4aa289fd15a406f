import assert from "node:assert/strict";
import { test } from "node:test";

import { addressesIn, formatMailbox, parseMailbox, splitMailboxes } from "../common/addresses.js";

test("a mailbox with a display name gives name and lower-case address", () => {
  assert.deepEqual(parseMailbox("Tom Smith <Tom@Example.org>"), { name: "Tom Smith", email: "tom@example.org" });
});

test("a quoted display name loses its quotes and escapes", () => {
  assert.deepEqual(parseMailbox('"Smith, Tom \\"T\\"" <tom@example.org>'), {
    name: 'Smith, Tom "T"',
    email: "tom@example.org",
  });
});

test("a bare address has no name", () => {
  assert.deepEqual(parseMailbox(" tom@example.org "), { name: "", email: "tom@example.org" });
});

test("a name with a comma is quoted when formatted", () => {
  assert.equal(formatMailbox("Doe, John", "a@b.example"), '"Doe, John" <a@b.example>');
  assert.equal(formatMailbox("John Doe", "a@b.example"), "John Doe <a@b.example>");
  assert.equal(formatMailbox("", "a@b.example"), "a@b.example");
});

test("commas inside quotes and angle brackets do not split mailboxes", () => {
  assert.deepEqual(splitMailboxes('"Doe, J" <j@x.example>, k@y.example'), ['"Doe, J" <j@x.example>', "k@y.example"]);
});

test("addresses are collected from several header values", () => {
  assert.deepEqual(addressesIn(["A <a@x.example>, b@y.example", "not an address"]), ["a@x.example", "b@y.example"]);
});
