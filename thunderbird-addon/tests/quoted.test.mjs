import assert from "node:assert/strict";
import { test } from "node:test";

import { findIdentities, quotedPlain } from "../common/quoted.js";

const ME = "john@john.example";

test("an identity in the attribution line of a plain reply is quoted", () => {
  const body = "Thanks!\n\nOn 1 May, John <john@john.example> wrote:\n> hello\n";

  assert.deepEqual(findIdentities(body, [ME], { plainText: true }), [{ address: ME, quoted: true }]);
});

test("an identity inside an HTML blockquote is quoted", () => {
  const body = '<p>Hi</p><div class="moz-cite-prefix">On 1 May, John &lt;John@John.example&gt; wrote:</div><blockquote type="cite">x</blockquote>';

  assert.deepEqual(findIdentities(body, [ME]), [{ address: ME, quoted: true }]);
});

test("an identity typed into the new text is found but not quoted", () => {
  const body = "Write to me at john@john.example\n";

  assert.deepEqual(findIdentities(body, [ME], { plainText: true }), [{ address: ME, quoted: false }]);
});

test("a body without an identity gives no warning", () => {
  assert.deepEqual(findIdentities("> On x, tom@example.org wrote:", [ME], { plainText: true }), []);
});

test("only '>' lines and the line that introduces them count as quoted", () => {
  assert.equal(quotedPlain("new\nintro:\n> old\nnew again"), "intro:\n> old");
});
