// Renders each popup with headless Chromium against the fake API and writes
// PNGs into docs/. Run: node thunderbird-addon/tests/screenshots.mjs
// (needs Debian's chromium). Serves the add-on on 127.0.0.1 only.

import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DOCS = fileURLToPath(new URL("../../docs/", import.meta.url));
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript",
  ".css": "text/css", ".json": "application/json", ".svg": "image/svg+xml" };

const SHOTS = [
  ["popup/display/display.html", "display-warn", "thunderbird-display-popup.png", 330],
  ["popup/display/display.html", "display-via", "thunderbird-display-popup-via.png", 290],
  ["popup/compose/compose.html", "compose-split", "thunderbird-compose-popup.png", 390],
  ["popup/compose/compose.html", "compose-shared", "thunderbird-compose-popup-shared.png", 190],
];

/** A popup page whose own script runs after the fake API is in place. */
function previewPage(path) {
  const html = readFileSync(join(ROOT, path), "utf-8");
  return html.replace(
    /<script type="module" src="([^"]+)"><\/script>/,
    '<script type="module">await import("/tests/preview-setup.mjs"); await import("./$1");</script>',
  );
}

const server = createServer((request, response) => {
  const path = normalize(decodeURIComponent(new URL(request.url, "http://x").pathname)).slice(1);
  if (path.startsWith("..")) {
    response.writeHead(403).end();
    return;
  }
  try {
    const body = path.endsWith(".html") ? previewPage(path) : readFileSync(join(ROOT, path));
    response.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" });
    response.end(body);
  } catch {
    response.writeHead(404).end();
  }
});

await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const { port } = server.address();
const profile = mkdtempSync(join(tmpdir(), "segcard-shots-"));
try {
  for (const [page, scenario, file, height] of SHOTS) {
    const url = `http://127.0.0.1:${port}/${page}?scenario=${scenario}`;
    // Asynchronous: this same process serves the pages Chromium asks for.
    await promisify(execFile)("chromium", [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run",
      `--user-data-dir=${profile}`, "--hide-scrollbars", `--window-size=460,${height}`,
      "--virtual-time-budget=3000", `--screenshot=${join(DOCS, file)}`, url,
    ], { timeout: 120000 });
    console.log(`wrote docs/${file}`);
  }
} finally {
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
