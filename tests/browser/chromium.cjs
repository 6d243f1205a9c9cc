// Headless Chromium as the browser tests start it: Debian's build, nothing in the
// background that could reach the network.
const { chromium } = require('playwright-core');

function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-quic', '--disable-component-update',
      '--disable-sync',
    ],
  });
}

module.exports = { launch };
