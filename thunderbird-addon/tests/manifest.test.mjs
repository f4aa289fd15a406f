import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { LOCALE } from "./helpers.mjs";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MANIFEST = JSON.parse(readFileSync(join(ROOT, "manifest.json"), "utf-8"));

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

const SHIPPED = files(ROOT).filter(
  (path) => !path.includes("/tests/") && !path.includes("/e2e/") && !path.endsWith("package.json"),
);

test("every file the manifest names exists", () => {
  const named = [
    ...MANIFEST.background.scripts,
    MANIFEST.message_display_action.default_popup,
    MANIFEST.compose_action.default_popup,
    MANIFEST.message_display_action.default_icon,
    ...Object.values(MANIFEST.icons),
  ];
  for (const path of named) {
    assert.ok(existsSync(join(ROOT, path)), path);
  }
});

test("no Experiment APIs and no remote code", () => {
  assert.equal(MANIFEST.experiment_apis, undefined);
  for (const path of SHIPPED.filter((p) => /\.(js|html)$/.test(p))) {
    const text = readFileSync(path, "utf-8");
    assert.doesNotMatch(text, /https?:\/\/|eval\(|new Function/, path);
  }
});

test("every message name the code uses is in the English messages", () => {
  const used = new Set();
  for (const path of SHIPPED.filter((p) => /\.(js|html|json)$/.test(p))) {
    const text = readFileSync(path, "utf-8");
    for (const match of text.matchAll(/(?:\bt\(|data-i18n=)["'`]([a-z_A-Z]+)["'`]/g)) {
      used.add(match[1]);
    }
    for (const match of text.matchAll(/__MSG_(\w+)__/g)) {
      used.add(match[1]);
    }
  }
  const missing = [...used].filter((key) => !LOCALE[key]);
  assert.deepEqual(missing, []);
  assert.ok(used.size > 10);
});

test("labels, results and errors built from a prefix all have messages", () => {
  const prefixed = [
    ...["via", "not_from", "old", "blocked", "unknown", "direct"].map((k) => `label_${k}`),
    ...["block", "unblock", "rotate", "trust"].map((k) => `result_${k}`),
    ...["not_installed", "host_failed", "timeout"].map((k) => `error_${k}`),
    ...["active", "blocked"].map((k) => `state_${k}`),
  ];
  assert.deepEqual(prefixed.filter((key) => !LOCALE[key]), []);
});

test("workarounds carry a COMPAT tag with a Thunderbird version", () => {
  for (const path of SHIPPED.filter((p) => p.endsWith(".js"))) {
    for (const line of readFileSync(path, "utf-8").split("\n")) {
      if (/COMPAT/.test(line)) {
        assert.match(line, /COMPAT TB\d+/, path);
      }
    }
  }
});
