// load-screenshot.cjs drives the demo page in headless Chromium as a
// person would: it starts the load, kills the node that is the shared
// counter's primary, waits, takes a screenshot of the page under load,
// stops the load and checks that the final read shows every acknowledged
// increment stored. It prints what the page showed and exits non-zero
// when the page showed a difference.
//
// It needs Chromium and puppeteer-core, installed outside the repository:
//
//	apt-get install -y chromium
//	cd "$(mktemp -d)" && npm i puppeteer-core && export NODE_PATH="$PWD/node_modules"
//
// then, with the demo running (make demo, or cd examples && go run ./cluster):
//
//	node examples/cluster/scripts/load-screenshot.cjs [URL] [OUT.png]
//
// URL defaults to http://127.0.0.1:8000/, OUT.png to demo-load.png.
// Environment: CHROMIUM (default /usr/bin/chromium), USERS (virtual
// users, default 20), ACTION (kill or pause, default kill), BEFORE and
// AFTER (seconds of load before and after the action, default 8 and 12),
// FINAL (a second screenshot, after the stop, to that file).
"use strict";

const puppeteer = require("puppeteer-core");

const url = process.argv[2] || "http://127.0.0.1:8000/";
const out = process.argv[3] || "demo-load.png";
const users = process.env.USERS || "20";
const action = process.env.ACTION || "kill";
const before = Number(process.env.BEFORE || 8) * 1000;
const after = Number(process.env.AFTER || 12) * 1000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

(async () => {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu"],
  });
  let failed = false;
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 1000 });
    page.on("pageerror", (e) => { console.log("page error:", e.message); failed = true; });
    await page.goto(url, { waitUntil: "load" });
    await page.waitForSelector("#load-start:not([disabled])");

    // Start the load with USERS virtual users.
    await page.$eval("#load-users", (e, v) => { e.value = v; }, users);
    await page.click("#load-start");
    await page.waitForSelector("#shared-primary-node", { timeout: 20000 });
    await sleep(before);
    const primary = await page.$eval("#shared-primary-node", (e) => e.textContent);
    console.log("shared counter's primary:", primary);

    // Kill (or pause) it in the node table, as a person would.
    await page.click("#" + action + "-" + primary);
    await page.waitForFunction((id) => {
      const b = document.getElementById("start-" + id) || {};
      const r = document.getElementById("resume-" + id) || {};
      return !b.disabled || !r.disabled;
    }, { timeout: 20000 }, primary);
    await sleep(after);
    const newPrimary = await page.$eval("#shared-primary-node", (e) => e.textContent);
    console.log("shared counter's primary after the " + action + ":", newPrimary);
    console.log("under load:", await page.$eval("#load-status", (e) => e.textContent));
    console.log("  stored − acknowledged:", await page.$eval("#load-diff-num", (e) => e.textContent),
      "|", await page.$eval("#load-diff-text", (e) => e.textContent));
    console.log("  not 2xx:", await page.$eval("#load-errors", (e) => e.textContent));

    // A screenshot of the page under load, down to the metrics.
    const shot = async (path) => {
      const bottom = await page.$eval("#metrics-card", (e) => e.getBoundingClientRect().bottom + window.scrollY);
      await page.screenshot({ path, clip: { x: 0, y: 0, width: 1280, height: Math.ceil(bottom) + 12 } });
    };
    await shot(out);
    console.log("screenshot:", out);

    // Stop: the page shows the final read.
    await page.click("#load-stop");
    await page.waitForFunction(() => document.querySelectorAll("#load-final-table tbody tr").length === 2, { timeout: 90000 });
    const rows = await page.$$eval("#load-final-table tbody tr", (trs) =>
      trs.map((tr) => [...tr.children].map((td) => td.textContent.trim())));
    console.log("final read (counter, acknowledged, stored, not acknowledged, result):");
    for (const r of rows) console.log("  " + r.join(" | "));
    console.log("  stored − acknowledged:", await page.$eval("#load-diff-num", (e) => e.textContent),
      "|", await page.$eval("#load-diff-text", (e) => e.textContent));
    if (rows.length !== 2 || !rows.every((r) => r[4] === "equal")) failed = true;
    if (process.env.FINAL) {
      await shot(process.env.FINAL);
    }
  } finally {
    await browser.close();
  }
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.error(e); process.exit(2); });
