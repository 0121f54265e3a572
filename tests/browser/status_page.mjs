// Opens the Sluice status page in Debian's headless chromium and reports what a user would see, as
// JSON on stdout: console errors, the components drawn in the topology, the numbers shown at two
// moments, the reload line and the chart's series. Usage: node status_page.mjs URL SCREENSHOT.png
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, screenshot] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "sluice-chromium-"));
// A fresh profile directory (the --user-data-dir) per run, removed afterwards.
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1400, height: 1100 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const errors = [];
const requests = [];
try {
  const page = await browser.newPage();
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") errors.push(`${m.type()}: ${m.text()}`); });
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("requestfailed", (r) => errors.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("request", (r) => requests.push(r.url()));
  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector("#topology svg g.node", { timeout: 15000 });
  const snapshot = () => page.evaluate(() => ({
    components: [...document.querySelectorAll("#topology g.node")].map((g) => g.getAttribute("data-component")),
    live: Object.fromEntries([...document.querySelectorAll("#topology text.live")].map((t) => [t.id, t.textContent])),
    receivers: [...document.querySelectorAll("#receivers tbody tr")].map((tr) => [...tr.cells].map((c) => c.textContent)),
    exporters: [...document.querySelectorAll("#exporters tbody tr")].map((tr) => [...tr.cells].map((c) => c.textContent)),
    samplers: [...document.querySelectorAll("#samplers tbody tr")].map((tr) => [...tr.cells].map((c) => c.textContent)),
    reload: document.getElementById("reload").textContent,
    series: [...document.querySelectorAll("#chart polyline")].map((p) => ({ name: p.getAttribute("data-series"), points: p.getAttribute("points").split(" ").filter(Boolean).length })),
    updated: document.getElementById("updated").textContent,
  }));
  await page.waitForTimeout(2500);
  const first = await snapshot();
  await page.waitForTimeout(3000);
  const second = await snapshot();
  await page.screenshot({ path: screenshot, fullPage: true });
  const external = requests.filter((u) => !u.startsWith(new URL(url).origin) && !u.startsWith("data:"));
  console.log(JSON.stringify({ errors, external, first, second }));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
