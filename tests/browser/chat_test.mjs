// Two headless Chromium pages on the chat page served by hydra: one sends, the other shows it.
//   node chat_test.mjs API_PORT WS_PORT OUT_DIR
import { chromium } from "playwright-core";

const [apiPort, wsPort, outDir] = process.argv.slice(2);
const page_url = `http://127.0.0.1:${apiPort}/demo/?ws=ws://127.0.0.1:${wsPort}/chat`;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  const [alice, bob] = [await browser.newPage(), await browser.newPage()];
  for (const page of [alice, bob]) {
    await page.goto(page_url);
    await page.waitForSelector("#join:not([disabled])", { timeout: 10000 });
    await page.fill("#room", "browser-room");
    await page.click("#join");
    await page.waitForSelector("#send:not([disabled])", { timeout: 10000 });
  }
  const text = "hello from the first page";
  await alice.fill("#msg", text);
  await alice.click("#send");
  await bob.waitForSelector(`#log li:has-text("${text}")`, { timeout: 10000 });
  await alice.waitForSelector(`#log li:has-text("${text}")`, { timeout: 10000 });
  const status = await bob.textContent("#status");
  if (!status.includes("in room")) throw new Error(`unexpected status: ${status}`);
  await bob.screenshot({ path: `${outDir}/chat.png` });
  console.log(`ok: the second page shows "${text}"; screenshot ${outDir}/chat.png`);
} catch (e) {
  failed = true;
  console.error("browser test failed:", e.message);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
